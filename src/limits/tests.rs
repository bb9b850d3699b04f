use super::state::{CHECKSUM_BYTES, STATE_MAGIC};
use super::window::{WindowCounter, FULL_SLOT, SLOTS};
use super::*;
use crate::fnv::fnv1a_64;
use crate::options::EntryOptions;

/// 2023-11-14T22:24:00Z: a whole number of sub-intervals of every period from a second to a day.
const T0: u64 = 1_700_000_640_000;

fn options(requests: &[(u64, u64)], tokens: &[(u64, u64)], parallel: Option<u32>) -> EntryOptions {
    let windows = |list: &[(u64, u64)]| list.iter().map(|&(limit, seconds)| Window { limit, seconds }).collect();
    EntryOptions { requests: windows(requests), tokens: windows(tokens), parallel, ..EntryOptions::default() }
}

fn limits(requests: &[(u64, u64)], tokens: &[(u64, u64)], parallel: Option<u32>) -> KeyLimits {
    KeyLimits::new(&options(requests, tokens, parallel), T0).unwrap_or_else(|e| panic!("{e}"))
}

/// xorshift64*: a reproducible stream for the randomized tests.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn header<'a>(headers: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| *n == name).map(|(_, value)| value.as_str())
}

#[test]
fn a_key_fits_in_1_kb_of_plain_data() {
    fn plain<T: Copy + Send + Sync + 'static>() {}
    plain::<KeyLimits>();
    assert_eq!(KEY_LIMITS_BYTES, 888);
    assert_eq!(std::mem::size_of::<WindowCounter>(), 144);
    assert_eq!(std::mem::align_of::<KeyLimits>(), 8);
    assert_eq!(100_000 * KEY_LIMITS_BYTES, 88_800_000, "the counters of 100,000 keys: about 85 MiB");
    assert_eq!(KeyLimits::default(), KeyLimits::EMPTY);
}

#[test]
fn limits_beyond_what_can_be_counted_are_errors() {
    let six = options(&[(1, 1), (2, 60), (3, 3600)], &[(4, 60), (5, 3600), (6, 86_400)], Some(2));
    assert_eq!(KeyLimits::check(&six), Ok(()));
    let seven = options(&[(1, 1), (2, 60), (3, 3600), (4, 86_400)], &[(4, 60), (5, 3600), (6, 86_400)], None);
    let error = KeyLimits::check(&seven).unwrap_err();
    assert_eq!(error, ConfigError::TooManyWindows(7));
    assert_eq!(error.to_string(), "7 limit windows, more than the 6 a key may have (tokens= and requests= together)");
    assert_eq!(
        KeyLimits::check(&options(&[], &[(1, 1); 6], None)),
        Err(ConfigError::Unsupported(Limit::Tokens(Window { limit: 1, seconds: 1 })))
    );
    for (bad, named) in [
        (options(&[(0, 60)], &[], None), "requests 0/1m"),
        (options(&[(1, 0)], &[], None), "requests 1/0d"),
        (options(&[], &[(1, MAX_WINDOW_SECONDS + 1)], None), "tokens 1/31622401s"),
        (options(&[], &[(1, u64::MAX)], None), "tokens 1/18446744073709551615s"),
        (options(&[(1, 60), (2, 60)], &[], None), "requests 2/1m"),
        (options(&[], &[], Some(0)), "parallel 0"),
    ] {
        let error = KeyLimits::check(&bad).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "limit \"{named}\" cannot be counted (it needs at least 1 over 1 second to 366 days, one per period)"
            )
        );
    }
    // One period for each kind is two windows, not a repetition.
    let both = limits(&[(60, 60)], &[(20_000, 60)], None);
    let named: Vec<String> = both.limits().map(|l| l.to_string()).collect();
    assert_eq!(named, ["requests 60/1m", "tokens 20000/1m"]);
    assert!(KeyLimits::check(&options(&[(u64::MAX, MAX_WINDOW_SECONDS)], &[], Some(u32::MAX))).is_ok());
    assert!(KeyLimits::check(&EntryOptions::default()).is_ok());
}

#[test]
fn limits_are_named_as_in_the_keys_file() {
    let key = limits(&[(60, 60)], &[(20_000, 60), (500_000, 86_400)], Some(2));
    let named: Vec<String> = key.limits().map(|l| l.to_string()).collect();
    assert_eq!(named, ["requests 60/1m", "tokens 20000/1m", "tokens 500000/1d", "parallel 2"]);
    let refusal = RateRefusal { limit: Limit::Requests(Window { limit: 60, seconds: 60 }), retry_after_seconds: 3 };
    assert_eq!(refusal.to_string(), "requests 60/1m");
}

#[test]
fn requests_are_admitted_up_to_the_limit_then_refused_until_the_first_is_forgotten() {
    let mut key = limits(&[(3, 60)], &[], None);
    for remaining in [2, 1, 0] {
        let info = key.admit_request(T0).unwrap();
        assert_eq!(info.requests.map(|r| r.remaining), Some(remaining));
        assert_eq!(info.tokens, None);
    }
    let refusal = key.admit_request(T0 + 1000).unwrap_err();
    assert_eq!(refusal.limit, Limit::Requests(Window { limit: 3, seconds: 60 }));
    // The three sit in the sub-interval [T0, T0 + 4 s), whose latest charge was at T0: it is
    // counted until a whole period has passed since then, at T0 + 60 s.
    assert_eq!(refusal.retry_after_seconds, 59);
    assert!(key.admit_request(T0 + 59_999).is_err());
    assert_eq!(key.admit_request(T0 + 60_000).map(|info| info.requests.map(|r| r.remaining)), Ok(Some(2)));
    // A refusal counts nothing.
    let mut key = limits(&[(1, 1)], &[], None);
    assert!(key.admit_request(T0 + 10).is_ok());
    for offset in 10..1010 {
        assert!(key.admit_request(T0 + offset).is_err(), "{offset}");
    }
    assert!(key.admit_request(T0 + 1010).is_ok());
    // Earlier charges of a sub-interval wait for its latest: counted from above, never early.
    let mut key = limits(&[(2, 60)], &[], None);
    key.admit_request(T0).unwrap();
    key.admit_request(T0 + 3_000).unwrap();
    assert_eq!(key.admit_request(T0 + 3_000).unwrap_err().retry_after_seconds, 60);
    assert!(key.admit_request(T0 + 62_999).is_err());
    assert!(key.admit_request(T0 + 63_000).is_ok());
}

#[test]
fn a_burst_at_a_boundary_is_not_a_second_limit() {
    // What a fixed window gets wrong: the limit just before a boundary and again just after.
    let mut key = limits(&[(10, 60)], &[], None);
    let before_boundary = T0 + 59_999;
    for _ in 0..10 {
        assert!(key.admit_request(before_boundary).is_ok());
    }
    for after in [60_000, 60_001, 61_000, 100_000, 119_998] {
        assert!(key.admit_request(T0 + after).is_err(), "{after}");
    }
    assert!(key.admit_request(T0 + 119_998).is_err());
    assert!(key.admit_request(T0 + 119_999).is_ok(), "a whole period after the ten");
}

#[test]
fn no_window_of_any_placement_admits_more_than_its_limit() {
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let periods = [1, 2, 3, 7, 10, 60, 90];
    for trial in 0..300 {
        let mut requests: Vec<(u64, u64)> = Vec::new();
        for _ in 0..1 + random.below(3) {
            let seconds = periods[random.below(periods.len() as u64) as usize];
            if requests.iter().all(|&(_, s)| s != seconds) {
                requests.push((1 + random.below(8), seconds));
            }
        }
        let start = T0 + random.below(1 << 40);
        let mut key = KeyLimits::new(&options(&requests, &[], None), start).unwrap();
        let mut admitted: Vec<u64> = Vec::new();
        let mut now = start;
        for _ in 0..2000 {
            now += match random.below(4) {
                0 => 0,
                1 => random.below(50),
                2 => random.below(2000),
                _ => random.below(150_000),
            };
            match key.admit_request(now) {
                Ok(info) => {
                    admitted.push(now);
                    let least = requests
                        .iter()
                        .map(|&(limit, seconds)| {
                            let inside = admitted.len() - admitted.partition_point(|&t| t + seconds * 1000 <= now);
                            assert!(inside as u64 <= limit, "trial {trial}: {inside} in {seconds} s, limit {limit}");
                            limit - inside as u64
                        })
                        .min();
                    assert!(info.requests.is_some_and(|r| r.remaining <= least.unwrap()), "trial {trial}");
                }
                Err(refusal) => {
                    let Limit::Requests(window) = refusal.limit else { panic!("{refusal}") };
                    let period = window.seconds * 1000;
                    // Everything counted lies within one sub-interval before the period.
                    let counted = admitted.len()
                        - admitted.partition_point(|&t| {
                            t * WIDTHS_PER_PERIOD + (WIDTHS_PER_PERIOD + 1) * period <= now * WIDTHS_PER_PERIOD
                        });
                    assert!(
                        counted as u64 >= window.limit,
                        "trial {trial}: refused early, {counted} counted in {window}"
                    );
                    // Retry-After is exact to the second.
                    let retry_ms = refusal.retry_after_seconds * 1000;
                    assert!(key.clone().admit_request(now + retry_ms).is_ok(), "trial {trial}");
                    assert!(key.clone().admit_request(now + retry_ms - 1000).is_err() || retry_ms == 1000);
                }
            }
        }
        // The property itself: every span of a period, wherever it starts, holds at most the limit.
        for &(limit, seconds) in &requests {
            for (first, &t) in admitted.iter().enumerate() {
                let inside = admitted[first..].partition_point(|&later| later < t + seconds * 1000);
                assert!(inside as u64 <= limit, "trial {trial}: {inside} from {t} over {seconds} s, limit {limit}");
            }
        }
    }
}

#[test]
fn reservations_let_a_key_overshoot_by_one_request_at_most() {
    let mut key = limits(&[], &[(100, 60)], None);
    // Eight requests of 5000 tokens at once: the first is admitted, the rest wait for it.
    let mut admitted = 0;
    for _ in 0..8 {
        if key.admit(T0).is_ok() {
            assert_eq!(key.reserve_tokens(5000), 5000);
            admitted += 1;
        }
    }
    assert_eq!(admitted, 1);
    let refusal = key.admit(T0).unwrap_err();
    assert_eq!((refusal.limit, refusal.retry_after_seconds), (Limit::Tokens(Window { limit: 100, seconds: 60 }), 1));
    assert!(!key.is_idle(T0));
    // Settled at its real size: the window is full by the counts now.
    key.settle(T0 + 1000, 5000, 30);
    key.leave();
    assert!(key.admit(T0 + 1000).is_ok(), "30 of 100 used, nothing reserved");
    key.reserve_tokens(50);
    assert!(key.admit(T0 + 1000).is_ok(), "30 used + 50 reserved < 100");
    key.reserve_tokens(50);
    assert!(key.admit(T0 + 1000).is_err(), "30 + 100 reserved");
    key.settle(T0 + 2000, 50, 0);
    key.settle(T0 + 2000, 50, 0);
    key.leave();
    key.leave();
    assert!(key.admit(T0 + 2000).is_ok());
    // A reservation survives a reload, and a key without tokens= reserves nothing.
    key.reserve_tokens(500);
    key.reconfigure(&options(&[], &[(100, 60)], None), T0 + 2000).unwrap();
    assert!(key.admit(T0 + 2000).is_err());
    let mut requests_only = limits(&[(10, 60)], &[], None);
    assert_eq!(requests_only.reserve_tokens(5000), 0);
    assert!(requests_only.admit(T0).is_ok());
}

#[test]
fn tokens_refuse_once_the_finished_answers_reach_the_limit() {
    let mut key = limits(&[], &[(1000, 60)], None);
    let info = key.admit_request(T0).unwrap();
    assert_eq!(info.tokens, Some(Remaining { limit: 1000, remaining: 1000, reset_ms: 0 }));
    assert_eq!(info.requests, None);
    key.charge_tokens(T0 + 5000, 400);
    let info = key.admit_request(T0 + 5000).unwrap();
    assert_eq!(info.tokens.map(|t| t.remaining), Some(600));
    // An answer may go past the limit by its own size: it is over when its size is known.
    key.charge_tokens(T0 + 10_000, 5000);
    assert_eq!(key.rate_info(T0 + 10_000).tokens.map(|t| t.remaining), Some(0));
    let refusal = key.admit_request(T0 + 10_000).unwrap_err();
    assert_eq!(refusal.limit, Limit::Tokens(Window { limit: 1000, seconds: 60 }));
    assert_eq!(refusal.to_string(), "tokens 1000/1m");
    // The 5000 were charged at T0 + 10 s, forgotten at T0 + 70 s.
    assert_eq!(refusal.retry_after_seconds, 60);
    assert!(key.admit_request(T0 + 69_999).is_err());
    assert_eq!(key.admit_request(T0 + 70_000).unwrap().tokens.map(|t| t.remaining), Some(1000));
    // Just below the limit admits; one token more than the limit is spent, none is lost.
    let mut key = limits(&[], &[(10, 1)], None);
    key.charge_tokens(T0, 9);
    assert!(key.admit_request(T0).is_ok());
    key.charge_tokens(T0, 1);
    assert!(key.admit_request(T0).is_err());
    key.charge_tokens(T0, u64::MAX);
    assert_eq!(key.admit_request(T0 + 500).unwrap_err().retry_after_seconds, 1);
    assert!(key.admit_request(T0 + 1067).is_ok());
}

#[test]
fn tokens_go_past_a_limit_by_no_more_than_one_answer() {
    let mut random = Random(7);
    for trial in 0..200 {
        let seconds = [1, 5, 60][random.below(3) as usize];
        let limit = 1 + random.below(200);
        let start = T0 + random.below(1 << 40);
        let mut key = KeyLimits::new(&options(&[], &[(limit, seconds)], None), start).unwrap();
        let mut charged: Vec<(u64, u64)> = Vec::new();
        let mut now = start;
        for _ in 0..1000 {
            now += random.below(seconds * 300);
            if key.admit_request(now).is_ok() {
                let answer = random.below(limit / 2 + 2);
                key.charge_tokens(now, answer);
                charged.push((now, answer));
                let first = charged.partition_point(|&(t, _)| t + seconds * 1000 <= now);
                let inside: u64 = charged[first..].iter().map(|&(_, tokens)| tokens).sum();
                assert!(inside < limit + answer, "trial {trial}: {inside} tokens, limit {limit}, last {answer}");
            }
        }
    }
}

#[test]
fn a_large_limit_counts_full_sub_intervals_as_unknown() {
    // Counts stop at u32::MAX per sub-interval; past it the window must not admit.
    let mut key = limits(&[], &[(u64::MAX, 60)], None);
    key.charge_tokens(T0, u64::from(u32::MAX) - 1);
    assert!(key.admit_request(T0).is_ok());
    key.charge_tokens(T0, 1);
    let refusal = key.admit_request(T0 + 1).unwrap_err();
    assert_eq!(refusal.retry_after_seconds, 60);
    assert_eq!(key.rate_info(T0).tokens.map(|t| t.remaining), Some(0));
    assert!(key.admit_request(T0 + 59_999).is_err());
    assert!(key.admit_request(T0 + 60_000).is_ok());
    // Below u32::MAX per sub-interval, a large limit is counted exactly.
    let mut key = limits(&[], &[(10_000_000_000, 60)], None);
    for second in 0..3 {
        key.charge_tokens(T0 + second * 4000, 3_000_000_000);
    }
    assert_eq!(key.rate_info(T0 + 8000).tokens.map(|t| t.remaining), Some(1_000_000_000));
    assert!(key.admit_request(T0 + 8000).is_ok());
}

#[test]
fn the_worst_window_is_named_and_sets_retry_after() {
    let mut key = limits(&[(2, 1), (3, 3600)], &[], None);
    assert!(key.admit_request(T0).is_ok());
    assert!(key.admit_request(T0).is_ok());
    let per_second = key.admit_request(T0 + 10).unwrap_err();
    assert_eq!((per_second.to_string().as_str(), per_second.retry_after_seconds), ("requests 2/1s", 1));
    assert!(key.admit_request(T0 + 1000).is_ok());
    // Now both are full: the hour makes the request wait longer.
    let refusal = key.admit_request(T0 + 2000).unwrap_err();
    assert_eq!(refusal.to_string(), "requests 3/1h");
    assert_eq!(refusal.retry_after_seconds, 3600 - 1);
}

#[test]
fn parallel_counts_from_admission_until_the_request_ends() {
    let mut key = limits(&[], &[], Some(2));
    assert_eq!(key.enter(), Ok(()));
    assert_eq!(key.enter(), Ok(()));
    let refusal = key.enter().unwrap_err();
    assert_eq!((refusal.to_string().as_str(), refusal.retry_after_seconds), ("parallel 2", 1));
    assert_eq!(key.in_flight(), 2);
    key.leave();
    assert_eq!(key.enter(), Ok(()));
    for _ in 0..5 {
        key.leave();
    }
    assert_eq!(key.in_flight(), 0, "never below zero");
    assert_eq!(key.admit(T0), Ok(RateInfo::default()));
    // Without parallel= the count still runs, for a reload that adds one.
    let mut key = limits(&[(100, 60)], &[], None);
    for _ in 0..3 {
        assert!(key.admit(T0).is_ok());
    }
    assert_eq!(key.in_flight(), 3);
    key.reconfigure(&options(&[(100, 60)], &[], Some(3)), T0).unwrap();
    assert_eq!(key.admit(T0).unwrap_err().limit, Limit::Parallel(3));
    key.in_flight = u32::MAX;
    key.reconfigure(&options(&[], &[], None), T0).unwrap();
    assert_eq!(key.enter(), Ok(()));
    assert_eq!(key.in_flight(), u32::MAX);
}

#[test]
fn admit_counts_nothing_when_any_limit_refuses() {
    let mut key = limits(&[(5, 60)], &[(100, 60)], Some(1));
    let info = key.admit(T0).unwrap();
    assert_eq!(info.requests.map(|r| r.remaining), Some(4));
    let before = key;
    let refusal = key.admit(T0 + 1).unwrap_err();
    assert_eq!(refusal.limit, Limit::Parallel(1));
    assert_eq!(key.rate_info(T0 + 1), before.rate_info(T0 + 1));
    assert_eq!(key.in_flight(), 1);
    key.leave();
    key.charge_tokens(T0 + 2, 100);
    // Tokens and parallel both refuse: the longer wait is named.
    assert!(key.enter().is_ok());
    let refusal = key.admit(T0 + 3).unwrap_err();
    assert_eq!(refusal.limit, Limit::Tokens(Window { limit: 100, seconds: 60 }));
    assert_eq!(key.in_flight(), 1);
    assert_eq!(key.rate_info(T0 + 3).requests.map(|r| r.remaining), Some(4));
    key.leave();
    assert_eq!(key.admit(T0 + 64_000).map(|info| info.requests.map(|r| r.remaining)), Ok(Some(5 - 1)));
}

#[test]
fn headers_describe_the_window_with_the_least_remaining() {
    let mut key = limits(&[(60, 60), (1000, 86_400)], &[(20_000, 60), (30_000, 3600)], None);
    let info = key.admit_request(T0 + 1500).unwrap();
    let headers = info.headers();
    let names: Vec<&str> = headers.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens"
        ]
    );
    assert_eq!(header(&headers, "x-ratelimit-limit-requests"), Some("60"));
    assert_eq!(header(&headers, "x-ratelimit-remaining-requests"), Some("59"));
    // Forgotten when a minute has passed since the latest request, just now.
    assert_eq!(header(&headers, "x-ratelimit-reset-requests"), Some("1m0s"));
    assert_eq!(header(&headers, "x-ratelimit-limit-tokens"), Some("20000"));
    assert_eq!(header(&headers, "x-ratelimit-remaining-tokens"), Some("20000"));
    assert_eq!(header(&headers, "x-ratelimit-reset-tokens"), Some("0s"));
    key.charge_tokens(T0 + 2000, 15_000);
    let headers = key.headers(T0 + 2000);
    assert_eq!(header(&headers, "x-ratelimit-remaining-tokens"), Some("5000"));
    key.charge_tokens(T0 + 600_000, 12_000);
    let headers = key.headers(T0 + 600_000);
    assert_eq!(header(&headers, "x-ratelimit-limit-tokens"), Some("30000"));
    assert_eq!(header(&headers, "x-ratelimit-remaining-tokens"), Some("3000"));
    assert_eq!(header(&headers, "x-ratelimit-reset-tokens"), Some("1h0m0s"));
    // Only the kinds the key has.
    let key = limits(&[], &[(5, 1)], Some(1));
    let names: Vec<&str> = key.headers(T0).into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"]);
    assert!(limits(&[], &[], Some(1)).headers(T0).is_empty());
    // Sub-second resets.
    let mut key = limits(&[(5, 1)], &[], None);
    key.admit_request(T0).unwrap();
    assert_eq!(header(&key.headers(T0 + 933), "x-ratelimit-reset-requests"), Some("67ms"));
    assert_eq!(header(&key.headers(T0 + 999), "x-ratelimit-reset-requests"), Some("1ms"));
    assert_eq!(header(&key.headers(T0 + 1000), "x-ratelimit-reset-requests"), Some("0s"));
    assert_eq!(header(&key.headers(T0 + 1000), "x-ratelimit-remaining-requests"), Some("5"));
}

#[test]
fn resets_are_written_as_openai_writes_them() {
    for (milliseconds, text) in [
        (0, "0s"),
        (1, "1ms"),
        (20, "20ms"),
        (999, "999ms"),
        (1000, "1s"),
        (1001, "2s"),
        (8640, "9s"),
        (59_000, "59s"),
        (60_000, "1m0s"),
        (360_000, "6m0s"),
        (3_600_000, "1h0m0s"),
        (3_723_000, "1h2m3s"),
        (86_400_000, "24h0m0s"),
        (u64::MAX, "5124095576030h25m52s"),
    ] {
        assert_eq!(format_reset(milliseconds), text, "{milliseconds}");
    }
}

#[test]
fn a_clock_that_goes_back_a_little_frees_nothing() {
    let mut key = limits(&[(1, 60)], &[], None);
    assert!(key.admit_request(T0 + 30_000).is_ok());
    // Another worker's cached time, a little behind.
    let refusal = key.admit_request(T0 + 29_000).unwrap_err();
    assert_eq!(refusal.retry_after_seconds, 90 - 29);
    assert!(key.admit_request(T0 - 30_000).is_err(), "a minute back still holds");
    assert!(key.admit_request(T0 + 90_000).is_ok());
}

#[test]
fn a_clock_set_back_moves_the_counts_with_it() {
    let mut key = limits(&[(2, 3600)], &[], None);
    assert!(key.admit_request(T0).is_ok());
    assert!(key.admit_request(T0 + 600_000).is_ok());
    // Set back a day: the two keep their ages (0 and 10 minutes) and the key is not locked.
    let back = T0 + 600_000 - 86_400_000;
    let refusal = key.admit_request(back).unwrap_err();
    assert_eq!(refusal.retry_after_seconds, 3000);
    assert!(key.admit_request(back + 2_999_999).is_err());
    assert!(key.admit_request(back + 3_000_000).is_ok());
    // Set back to near the epoch: counts older than it can be are kept at its start.
    let mut key = limits(&[(3, 60)], &[], None);
    for offset in [0, 20_000, 40_000] {
        assert!(key.admit_request(T0 + offset).is_ok());
    }
    assert!(key.admit_request(5000).is_err());
    assert!(key.admit_request(64_000).is_ok());
}

#[test]
fn reconfiguring_keeps_the_counts_of_windows_that_stay() {
    let mut key = limits(&[(10, 60), (100, 3600)], &[(1000, 60)], Some(10));
    for _ in 0..5 {
        key.admit(T0).unwrap();
    }
    key.charge_tokens(T0, 700);
    // Same periods, other limits; a new day window; the hour dropped; tokens and requests
    // over the same minute stay apart.
    let changed = options(&[(6, 60), (50, 86_400)], &[(800, 60)], Some(10));
    key.reconfigure(&changed, T0 + 1000).unwrap();
    let named: Vec<String> = key.limits().map(|l| l.to_string()).collect();
    assert_eq!(named, ["requests 6/1m", "requests 50/1d", "tokens 800/1m", "parallel 10"]);
    let info = key.admit(T0 + 1000).unwrap();
    assert_eq!(info.requests, Some(Remaining { limit: 6, remaining: 0, reset_ms: 60_000 }));
    assert_eq!(info.tokens.map(|t| t.remaining), Some(100));
    assert_eq!(key.in_flight(), 6);
    assert_eq!(key.admit(T0 + 1000).unwrap_err().to_string(), "requests 6/1m");
    // The day window started empty at the change: it holds only what came after.
    let day = key.windows().iter().find(|w| w.seconds == 86_400).unwrap();
    assert_eq!(day.used(key.latest_ms, T0 + 1000), 1);
    // A window that goes and comes back starts empty.
    key.reconfigure(&options(&[(50, 86_400)], &[], None), T0 + 2000).unwrap();
    key.reconfigure(&changed, T0 + 2000).unwrap();
    assert_eq!(key.rate_info(T0 + 2000).tokens.map(|t| t.remaining), Some(800));
    // Options that cannot be counted change nothing.
    let before = key;
    let seven = options(&[(1, 1), (2, 2), (3, 3), (4, 4)], &[(1, 1), (2, 2), (3, 3)], None);
    assert_eq!(key.reconfigure(&seven, T0 + 3000), Err(ConfigError::TooManyWindows(7)));
    assert_eq!(key, before);
    // Every limit removed: nothing counted, the in-flight count kept.
    key.reconfigure(&EntryOptions::default(), T0 + 3000).unwrap();
    assert_eq!(key.limits().count(), 0);
    assert_eq!(key.in_flight(), 6);
    assert_eq!(key.admit(T0 + 3000), Ok(RateInfo::default()));
}

#[test]
fn idle_keys_can_be_forgotten() {
    let mut key = limits(&[(1, 60)], &[], Some(1));
    assert!(key.is_idle(T0));
    key.admit(T0).unwrap();
    assert!(!key.is_idle(T0 + 70_000));
    key.leave();
    assert!(!key.is_idle(T0 + 59_999));
    assert!(key.is_idle(T0 + 60_000));
}

#[test]
fn any_state_and_any_time_never_panic() {
    let mut random = Random(0xdead_beef);
    let moments = [0, 1, 999, 1000, T0, u64::MAX / 2, u64::MAX - 1, u64::MAX];
    for _ in 0..3000 {
        let mut key = KeyLimits::EMPTY;
        key.latest_ms = if random.below(2) == 0 { moments[random.below(8) as usize] } else { random.next() };
        key.parallel = random.below(4) as u32;
        key.in_flight = [0, 1, u32::MAX][random.below(3) as usize];
        key.reserved_tokens = [0, 1, u32::MAX, random.next() as u32][random.below(4) as usize];
        key.window_count = random.below(256) as u8;
        for window in &mut key.windows {
            window.kind = random.below(4) as u8;
            window.seconds = [0, 1, 60, u32::MAX, random.next() as u32][random.below(5) as usize];
            window.limit = [0, 1, u64::MAX, random.next()][random.below(4) as usize];
            for slot in &mut window.slots {
                *slot = [0, 1, FULL_SLOT, random.next() as u32][random.below(4) as usize];
            }
        }
        let now = if random.below(2) == 0 { moments[random.below(8) as usize] } else { random.next() };
        let _ = key.headers(now);
        let _ = key.is_idle(now);
        let _ = key.limits().count();
        if let Err(refusal) = key.admit(now) {
            assert!(refusal.retry_after_seconds >= 1);
        }
        let _ = key.admit_request(now.wrapping_add(1));
        let reserved = key.reserve_tokens(random.next());
        key.settle(now, reserved.wrapping_add(random.below(3)), random.next());
        key.charge_tokens(now, random.next());
        let _ = key.enter();
        key.leave();
        let _ = key.reconfigure(&options(&[(1, 60)], &[(5, 1)], Some(1)), now);
        let decoded = decode_state(&encode_state([(&b"k"[..], &key)]));
        assert!(decoded.is_ok() || decoded == Err(StateError::Invalid("a window this build cannot count")));
    }
}

fn sample_state() -> Vec<(Vec<u8>, KeyLimits)> {
    let mut alice = limits(&[(60, 60)], &[(20_000, 60), (500_000, 86_400)], Some(2));
    alice.admit(T0).unwrap();
    alice.charge_tokens(T0 + 3000, 1234);
    let mut ci = limits(&[(1, 1), (2, 2), (3, 3)], &[(4, 4), (5, 5), (6, MAX_WINDOW_SECONDS)], None);
    ci.admit_request(T0 + 10).unwrap();
    ci.charge_tokens(T0 + 20, u64::MAX);
    let fingerprint = vec![0xab; 32];
    vec![
        (b"alice".to_vec(), alice),
        (fingerprint, ci),
        (Vec::new(), KeyLimits::EMPTY),
        (vec![b'x'; MAX_KEY_ID_BYTES], limits(&[], &[], Some(u32::MAX))),
    ]
}

fn encode(entries: &[(Vec<u8>, KeyLimits)]) -> Vec<u8> {
    encode_state(entries.iter().map(|(id, limits)| (id.as_slice(), limits)))
}

#[test]
fn the_state_file_reads_back_what_was_written() {
    let entries = sample_state();
    let bytes = encode(&entries);
    let decoded = decode_state(&bytes).unwrap();
    assert_eq!(decoded.len(), entries.len());
    for ((id, limits), (read_id, read_limits)) in entries.iter().zip(&decoded) {
        assert_eq!(read_id, id);
        // Requests in flight end with the process that ran them.
        assert_eq!(*read_limits, KeyLimits { in_flight: 0, ..*limits });
    }
    assert_eq!(decoded[0].1.rate_info(T0 + 3000), entries[0].1.rate_info(T0 + 3000));
    assert_eq!(entries[0].1.in_flight(), 1);
    assert_eq!(decode_state(&encode(&[])), Ok(Vec::new()));
    assert_eq!(encode(&decoded), bytes);
    // Ids the file cannot hold are left out, not cut.
    let too_long = vec![b'y'; MAX_KEY_ID_BYTES + 1];
    let huge = vec![b'z'; 70_000];
    let key = KeyLimits::EMPTY;
    let bytes = encode_state([(&too_long[..], &key), (&b"kept"[..], &key), (&huge[..], &key)]);
    assert_eq!(decode_state(&bytes), Ok(vec![(b"kept".to_vec(), key)]));
}

#[test]
fn every_truncation_and_every_changed_byte_is_refused() {
    let bytes = encode(&sample_state());
    for length in 0..bytes.len() {
        assert!(decode_state(&bytes[..length]).is_err(), "{length}");
    }
    assert_eq!(decode_state(&bytes[..bytes.len() - 1]), Err(StateError::ChecksumMismatch));
    assert_eq!(decode_state(&bytes[..20]), Err(StateError::Truncated));
    assert_eq!(decode_state(&bytes[..5]), Err(StateError::Truncated));
    for position in 0..bytes.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut changed = bytes.clone();
            changed[position] ^= flip;
            assert!(decode_state(&changed).is_err(), "{position} ^ {flip:#x}");
        }
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(decode_state(&longer).is_err());
}

/// A file with a valid checksum over content the format does not allow.
fn sealed(mut content: Vec<u8>) -> Vec<u8> {
    let checksum = fnv1a_64(&content);
    content.extend_from_slice(&checksum.to_le_bytes());
    content
}

#[test]
fn a_reconfigured_window_forgets_its_counts_no_sooner() {
    let mut key = limits(&[(1, 60)], &[], None);
    key.admit_request(T0 + 3_000).unwrap();
    key.reconfigure(&options(&[(1, 60)], &[(500, 60)], None), T0 + 3_500).unwrap();
    assert!(key.admit_request(T0 + 62_999).is_err(), "a minute after the request, not after its sub-interval began");
    assert!(key.admit_request(T0 + 63_000).is_ok());
}

#[test]
fn a_version_1_file_is_read_with_each_sub_interval_kept_to_its_end() {
    let mut key = limits(&[(2, 60)], &[], None);
    key.admit_request(T0).unwrap();
    key.admit_request(T0 + 10).unwrap();
    // Version 1 wrote the slots only.
    let mut v1 = Vec::new();
    v1.extend_from_slice(&STATE_MAGIC);
    v1.extend_from_slice(&1u32.to_le_bytes());
    v1.extend_from_slice(&1u32.to_le_bytes());
    v1.extend_from_slice(&3u16.to_le_bytes());
    v1.extend_from_slice(b"key");
    v1.extend_from_slice(&key.latest_ms.to_le_bytes());
    v1.extend_from_slice(&key.parallel.to_le_bytes());
    v1.push(1);
    let window = key.windows[0];
    v1.push(window.kind);
    v1.extend_from_slice(&window.seconds.to_le_bytes());
    v1.extend_from_slice(&window.limit.to_le_bytes());
    for slot in window.slots {
        v1.extend_from_slice(&slot.to_le_bytes());
    }
    let read = decode_state(&sealed(v1)).unwrap();
    let mut restored = read[0].1;
    let sub_interval_end = window.start_ms(window.sub_interval_at(T0) + 1);
    let forgotten = sub_interval_end + 60_000;
    assert!(restored.admit_request(forgotten - 1).is_err());
    assert!(restored.admit_request(forgotten).is_ok());
}

#[test]
fn retry_after_and_reset_never_exceed_the_window() {
    let mut random = Random(0x5eed_1234_abcd_ef01);
    for seconds in [1u64, 2, 3, 7, 30, 60, 3600] {
        for _ in 0..200 {
            let limit = 1 + random.below(4);
            let mut key = limits(&[(limit, seconds)], &[], None);
            let mut now = T0 + random.below(100_000);
            for _ in 0..limit {
                key.admit_request(now).unwrap();
                now += random.below((seconds * 1000 / (limit + 1)).max(1));
            }
            let retry = key.admit_request(now).unwrap_err().retry_after_seconds;
            assert!(retry <= seconds, "Retry-After {retry} for a {seconds} s window");
            let reset = key.rate_info(now).requests.unwrap().reset_ms;
            assert!(reset <= seconds * 1000, "reset {reset} ms for a {seconds} s window");
            assert!(key.admit_request(now + retry * 1000).is_ok(), "{seconds} s, retry {retry}");
        }
    }
}

#[test]
fn state_errors_say_why_without_the_content() {
    assert_eq!(decode_state(b""), Err(StateError::Empty));
    assert_eq!(decode_state(b"alice 60/1m"), Err(StateError::NotAStateFile));
    assert_eq!(decode_state(b"x"), Err(StateError::NotAStateFile));
    let bytes = encode(&sample_state());
    let mut future = bytes[..bytes.len() - CHECKSUM_BYTES].to_vec();
    future[8..12].copy_from_slice(&3u32.to_le_bytes());
    assert_eq!(decode_state(&sealed(future)), Err(StateError::UnsupportedVersion(3)));
    let empty = encode(&[]);
    let header = |count: u32| {
        let mut header = empty[..12].to_vec();
        header.extend_from_slice(&count.to_le_bytes());
        header
    };
    assert_eq!(
        decode_state(&sealed(header(u32::MAX))),
        Err(StateError::Invalid("fewer entries than the count says")),
        "a count the file cannot hold allocates nothing"
    );
    let mut trailing = header(0);
    trailing.push(0);
    assert_eq!(decode_state(&sealed(trailing)), Err(StateError::Invalid("bytes after the last entry")));
    let mut long_id = header(1);
    long_id.extend_from_slice(&257u16.to_le_bytes());
    long_id.extend_from_slice(&[b's'; 257]);
    assert_eq!(decode_state(&sealed(long_id)), Err(StateError::Invalid("a key id longer than 256 bytes")));
    let entry = |window_count: u8, kind: u8, seconds: u32, limit: u64| {
        let mut bytes = header(1);
        bytes.extend_from_slice(&6u16.to_le_bytes());
        bytes.extend_from_slice(b"secret");
        bytes.extend_from_slice(&T0.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.push(window_count);
        for _ in 0..window_count.min(8) {
            bytes.push(kind);
            bytes.extend_from_slice(&seconds.to_le_bytes());
            bytes.extend_from_slice(&limit.to_le_bytes());
            bytes.extend_from_slice(&[0; SLOTS * 8]);
        }
        sealed(bytes)
    };
    assert!(decode_state(&entry(1, 2, 60, 5)).is_ok());
    let windows_error = StateError::Invalid("a window this build cannot count");
    for bad in [
        entry(1, 3, 60, 5),
        entry(1, 0, 60, 5),
        entry(1, 1, 0, 5),
        entry(1, 1, 31_622_401, 5),
        entry(1, 1, 60, 0),
        entry(2, 1, 60, 5),
    ] {
        assert_eq!(decode_state(&bad), Err(windows_error));
    }
    assert_eq!(decode_state(&entry(7, 1, 60, 5)), Err(StateError::Invalid("more windows than a key may have")));
    for error in [
        StateError::Empty,
        StateError::NotAStateFile,
        StateError::UnsupportedVersion(3),
        StateError::Truncated,
        StateError::ChecksumMismatch,
        windows_error,
    ] {
        assert!(!error.to_string().contains("secret"));
    }
    assert_eq!(
        StateError::UnsupportedVersion(3).to_string(),
        "format version 3; this build reads only versions 1 and 2"
    );
    assert_eq!(StateError::ChecksumMismatch.to_string(), "checksum mismatch: the file is corrupt or incomplete");
}
