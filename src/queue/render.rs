//! The queues' metrics: a snapshot of one queue, and all of them in Prometheus' text format.

use crate::queue::data::WAIT_BUCKETS_MS;

/// One queue's series: its capacity, in flight, each key's (label, waiting, slot time), waits.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub capacity: u32,
    pub in_flight: u32,
    pub keys: Vec<(String, u32, u64)>,
    pub wait_buckets: [u64; WAIT_BUCKETS_MS.len()],
    pub wait_count: u64,
    pub wait_sum_ms: u64,
}

/// The queues' series in Prometheus' text format, labelled by capacity: `ollama_auth_in_flight`
/// and `ollama_auth_queue_capacity` (gauges), `ollama_auth_queue_waiting{user}` (gauge),
/// (the slot time each key used is in the usage series, by user and model: `metrics`), and the histogram
/// `ollama_auth_queue_wait_seconds`. Keys of one label (several unnamed keys) are added up.
pub fn render(queues: &[Snapshot]) -> Vec<u8> {
    use std::fmt::Write;
    if queues.is_empty() {
        return Vec::new();
    }
    let mut out = String::new();
    let mut families: [(&str, &str, &str, String); 4] = [
        ("ollama_auth_in_flight", "gauge", "Inference requests holding a slot of the fair queue.", String::new()),
        (
            "ollama_auth_queue_capacity",
            "gauge",
            "Slots of the fair queue (ollama_auth_queue capacity=).",
            String::new(),
        ),
        ("ollama_auth_queue_waiting", "gauge", "Requests waiting in the fair queue, by user.", String::new()),
        ("ollama_auth_queue_wait_seconds", "histogram", "How long requests waited for a slot.", String::new()),
    ];
    for queue in queues {
        let capacity = queue.capacity;
        let _ = writeln!(families[0].3, "ollama_auth_in_flight{{capacity=\"{capacity}\"}} {}", queue.in_flight);
        let _ = writeln!(families[1].3, "ollama_auth_queue_capacity{{capacity=\"{capacity}\"}} {capacity}");
        let mut by_user: Vec<(String, u32)> = Vec::new();
        for (label, waiting, _) in &queue.keys {
            match by_user.iter_mut().find(|(known, _)| known == label) {
                Some(entry) => entry.1 += waiting,
                None => by_user.push((label.clone(), *waiting)),
            }
        }
        by_user.sort();
        for (label, waiting) in &by_user {
            let mut user = Vec::new();
            crate::metrics::push_label_value(&mut user, label);
            let user = String::from_utf8_lossy(&user);
            let _ = writeln!(
                families[2].3,
                "ollama_auth_queue_waiting{{capacity=\"{capacity}\",user=\"{user}\"}} {waiting}"
            );
        }
        let mut cumulative = 0;
        for (bound, count) in WAIT_BUCKETS_MS.iter().zip(queue.wait_buckets) {
            cumulative += count;
            let le = *bound as f64 / 1000.0;
            let _ = writeln!(
                families[3].3,
                "ollama_auth_queue_wait_seconds_bucket{{capacity=\"{capacity}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let hist = &mut families[3].3;
        let _ = writeln!(
            hist,
            "ollama_auth_queue_wait_seconds_bucket{{capacity=\"{capacity}\",le=\"+Inf\"}} {}",
            queue.wait_count
        );
        let _ = writeln!(
            hist,
            "ollama_auth_queue_wait_seconds_sum{{capacity=\"{capacity}\"}} {}",
            queue.wait_sum_ms as f64 / 1000.0
        );
        let _ = writeln!(hist, "ollama_auth_queue_wait_seconds_count{{capacity=\"{capacity}\"}} {}", queue.wait_count);
    }
    for (name, kind, help, lines) in &families {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{lines}");
    }
    out.into_bytes()
}
