// The usage scanner's unit tests: every dialect and framing, split anywhere.
#[cfg(test)]
use super::plain::PlainLine;
use super::*;
use crate::json;

/// A whole line as [`PlainLine`] sees it: `None` if it may count, else whether it looks like
/// a token (`"done": false`).
fn plain_chunk_line(line: &[u8]) -> Option<bool> {
    let mut plain = PlainLine::default();
    let mut base = 0;
    while base < line.len() {
        let mut mask = crate::bytescan::mask_of(line, base, PlainLine::STOPS);
        while mask != 0 {
            let at = base + mask.trailing_zeros() as usize;
            mask &= mask - 1;
            plain.look_at(line, at);
        }
        base += 64;
    }
    plain.verdict()
}

const NATIVE: AnswerKind = AnswerKind { dialect: Dialect::Native, framing: Framing::Json };
const OPENAI_JSON: AnswerKind = AnswerKind { dialect: Dialect::OpenAi, framing: Framing::Json };
const OPENAI_SSE: AnswerKind = AnswerKind { dialect: Dialect::OpenAi, framing: Framing::EventStream };
const ANTHROPIC_JSON: AnswerKind = AnswerKind { dialect: Dialect::Anthropic, framing: Framing::Json };
const ANTHROPIC_SSE: AnswerKind = AnswerKind { dialect: Dialect::Anthropic, framing: Framing::EventStream };

/// What a scan found, to compare in one assertion.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    model: Option<String>,
    prompt: Option<u64>,
    completion: Option<u64>,
    so_far: u64,
    chunks: u64,
    malformed: bool,
}

fn found(scanner: &UsageScanner) -> Found {
    Found {
        model: scanner.model().map(str::to_owned),
        prompt: scanner.prompt_tokens(),
        completion: scanner.completion_tokens(),
        so_far: scanner.completion_tokens_so_far(),
        chunks: scanner.token_chunks(),
        malformed: scanner.saw_malformed(),
    }
}

fn scan_chunks<'a>(kind: AnswerKind, chunks: impl IntoIterator<Item = &'a [u8]>) -> Found {
    let mut scanner = UsageScanner::new(kind);
    for chunk in chunks {
        scanner.feed(chunk);
    }
    found(&scanner)
}

fn scan(kind: AnswerKind, answer: &[u8]) -> Found {
    scan_chunks(kind, [answer])
}

/// A small deterministic generator for split points.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// Scans `answer` whole, then split in two at every point, then a byte at a time, then cut
/// into random pieces, and checks every way finds the same.
fn scan_every_way(kind: AnswerKind, answer: &[u8]) -> Found {
    let whole = scan(kind, answer);
    for at in 0..=answer.len() {
        let (a, b) = answer.split_at(at);
        assert_eq!(scan_chunks(kind, [a, b]), whole, "split at {at}");
    }
    assert_eq!(scan_chunks(kind, answer.chunks(1)), whole, "a byte at a time");
    let mut random = Lcg(answer.len() as u64);
    for _ in 0..50 {
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < answer.len() {
            let len = 1 + random.below(40);
            pieces.push(&answer[at..(at + len).min(answer.len())]);
            at += len;
        }
        assert_eq!(scan_chunks(kind, pieces), whole);
    }
    whole
}

fn counted(model: &str, prompt: u64, completion: u64, chunks: u64) -> Found {
    Found {
        model: Some(model.into()),
        prompt: Some(prompt),
        completion: Some(completion),
        so_far: completion,
        chunks,
        malformed: false,
    }
}

// Native answers, as Ollama writes them.

const GENERATE_STREAM: &str = concat!(
    r#"{"model":"llama3.2","created_at":"2025-01-01T00:00:00.1Z","response":"The","done":false}"#,
    "\n",
    r#"{"model":"llama3.2","created_at":"2025-01-01T00:00:00.2Z","response":" sky \"model\":\"x\" \u00e9 ","done":false}"#,
    "\n",
    r#"{"model":"llama3.2","created_at":"2025-01-01T00:00:00.3Z","response":" is blue, \"eval_count\":999 😀","done":false}"#,
    "\n",
    r#"{"model":"llama3.2","created_at":"2025-01-01T00:00:00.4Z","response":"","done":true,"done_reason":"stop","#,
    r#""context":[128006,9125,128007,271,38766,1303,33025,2696],"total_duration":5043500667,"#,
    r#""load_duration":5025959,"prompt_eval_count":26,"prompt_eval_duration":325953000,"#,
    r#""eval_count":290,"eval_duration":4709213000}"#,
    "\n",
);

#[test]
fn native_stream_counts_the_done_object() {
    assert_eq!(scan_every_way(NATIVE, GENERATE_STREAM.as_bytes()), counted("llama3.2", 26, 290, 3));
}

#[test]
fn native_stream_cut_short_counts_the_chunks_relayed() {
    let cut = GENERATE_STREAM.find("\"done\":true").unwrap();
    let mut scanner = UsageScanner::new(NATIVE);
    let mut seen = Vec::new();
    for (i, &b) in GENERATE_STREAM.as_bytes()[..cut].iter().enumerate() {
        scanner.feed(&[b]);
        if b == b'}' && GENERATE_STREAM.as_bytes()[i + 1] == b'\n' {
            seen.push(scanner.completion_tokens_so_far());
        }
    }
    assert_eq!(seen, [1, 2, 3]);
    assert!(!scanner.is_final());
    assert_eq!(scanner.completion_tokens(), None);
    assert_eq!(scanner.prompt_tokens(), None);
    assert_eq!(scanner.completion_tokens_so_far(), 3);
    assert_eq!(scanner.model(), Some("llama3.2"));
    assert!(!scanner.saw_malformed());
}

#[test]
fn native_chat_ignores_nested_and_quoted_lookalikes() {
    let answer = concat!(
        r#"{"model":"qwen3:8b","created_at":"2025-01-01T00:00:00Z","message":{"role":"assistant","#,
        r#""content":"{\"model\":\"evil\",\"eval_count\":1,\"done\":true}","model":"nested","#,
        r#""eval_count":7,"done":true,"prompt_eval_count":8},"done":false}"#,
        "\n",
        r#"{"model":"qwen3:8b","created_at":"2025-01-01T00:00:01Z","message":{"role":"assistant","content":"","#,
        r#""tool_calls":[{"function":{"name":"f","arguments":{"model":"x","usage":{"prompt_tokens":5},"#,
        r#""done":true,"eval_count":3,"a":[[[[{"eval_count":4}]]]]}}}]},"done":false}"#,
        "\n",
        r#"{"model":"qwen3:8b","created_at":"2025-01-01T00:00:02Z","message":{"role":"assistant","content":""},"#,
        r#""done_reason":"stop","done":true,"total_duration":1,"prompt_eval_count":11,"eval_count":2,"#,
        r#""eval_duration":1}"#,
        "\n",
    );
    assert_eq!(scan_every_way(NATIVE, answer.as_bytes()), counted("qwen3:8b", 11, 2, 2));
}

#[test]
fn native_done_object_omits_zero_counts() {
    // Go's `omitempty`: a prompt wholly cached has no prompt_eval_count.
    let answer = br#"{"model":"m","response":"hi","done":true,"eval_count":1}"#;
    assert_eq!(scan_every_way(NATIVE, answer), counted("m", 0, 1, 0));
    let load = br#"{"model":"m","created_at":"2025-01-01T00:00:00Z","response":"","done":true,"done_reason":"load"}"#;
    assert_eq!(scan(NATIVE, load), counted("m", 0, 0, 0));
}

#[test]
fn native_counts_come_whatever_the_member_order_and_spacing() {
    let answer = b" {\r \"eval_count\" : 5 ,\t\"done\" :\rtrue , \"prompt_eval_count\":\t6, \"model\" : \"m\" } \n";
    assert_eq!(scan_every_way(NATIVE, answer), counted("m", 6, 5, 0));
    // NDJSON: an object ends on its line (Ollama's always do); one cut by a newline is damage.
    let split = b"{\"model\":\"m\",\"done\":true,\n\"eval_count\":5}\n";
    let found = scan_every_way(NATIVE, split);
    assert_eq!((found.completion, found.malformed), (None, true));
}

#[test]
fn embed_counts_after_megabytes_of_vectors_in_bounded_memory() {
    let mut answer = String::from(r#"{"model":"nomic-embed-text","embeddings":["#);
    let mut random = Lcg(7);
    let mut vectors = 0;
    while answer.len() < 4 << 20 {
        if vectors > 0 {
            answer.push(',');
        }
        answer.push('[');
        for i in 0..768 {
            if i > 0 {
                answer.push(',');
            }
            let n = random.below(2_000_000) as f64 / 1e6 - 1.0;
            answer.push_str(&format!("{n:e}"));
        }
        answer.push(']');
        vectors += 1;
    }
    answer.push_str(r#"],"total_duration":14143917,"load_duration":1019500,"prompt_eval_count":8192}"#);
    let started = std::time::Instant::now();
    let mut scanner = UsageScanner::new(NATIVE);
    for chunk in answer.as_bytes().chunks(4096) {
        scanner.feed(chunk);
    }
    let elapsed = started.elapsed();
    println!(
        "scanned {} MB of embeddings in {elapsed:?} ({:.0} MB/s); scanner state {} bytes",
        answer.len() >> 20,
        answer.len() as f64 / 1e6 / elapsed.as_secs_f64(),
        std::mem::size_of::<UsageScanner>()
    );
    assert_eq!(found(&scanner), counted("nomic-embed-text", 8192, 0, 0));
    assert!(std::mem::size_of::<UsageScanner>() < 2048, "{}", std::mem::size_of::<UsageScanner>());
    // Odd splits too, on a smaller one.
    let small = br#"{"model":"all-minilm","embeddings":[[0.010071029,-0.0017594862,0.05007221],[-1e-3,2E+5]],"total_duration":1,"prompt_eval_count":12}"#;
    assert_eq!(scan_every_way(NATIVE, small), counted("all-minilm", 12, 0, 0));
    // The legacy /api/embeddings reports no count.
    let legacy = br#"{"embedding":[0.5,-0.25]}"#;
    assert_eq!(scan(NATIVE, legacy).prompt, None);
}

#[test]
fn strings_are_decoded_across_any_split() {
    let answer = r#"{"m\u006fdel":"llama\u00e9-\ud83d\ude00-\"q\"\\\/-é😀:latest","done":true,"prompt_eval_count":1,"eval_count":2}"#;
    assert_eq!(scan_every_way(NATIVE, answer.as_bytes()), counted("llamaé-😀-\"q\"\\/-é😀:latest", 1, 2, 0));
    // Lone surrogates become U+FFFD, as in Go.
    let answer = br#"{"model":"a\ud83d-\ude00-\ud83d\u0041","done":true}"#;
    assert_eq!(scan(NATIVE, answer).model.as_deref(), Some("a\u{FFFD}-\u{FFFD}-\u{FFFD}A"));
}

#[test]
fn odd_models_and_numbers_are_not_taken() {
    let long =
        format!(r#"{{"model":"{}","done":true,"prompt_eval_count":1,"eval_count":2}}"#, "m".repeat(MAX_MODEL_LEN + 1));
    let found = scan(NATIVE, long.as_bytes());
    assert_eq!((found.model, found.prompt, found.completion), (None, Some(1), Some(2)));
    let at_limit =
        format!(r#"{{"model":"{}","done":true,"prompt_eval_count":1,"eval_count":2}}"#, "m".repeat(MAX_MODEL_LEN));
    assert_eq!(scan(NATIVE, at_limit.as_bytes()).model.map(|m| m.len()), Some(MAX_MODEL_LEN));
    // Invalid UTF-8 in the name: not reported.
    assert_eq!(scan(NATIVE, b"{\"model\":\"\xff\",\"done\":true}").model, None);
    // Not a model: a number, or an object.
    assert_eq!(scan(NATIVE, br#"{"model":5,"done":true}"#).model, None);
    assert_eq!(scan(NATIVE, br#"{"model":{"model":"x"},"done":true}"#).model, None);
    for count in ["-1", "1.5", "1e3", "18446744073709551616", "\"7\"", "null", "true"] {
        let answer = format!(r#"{{"done":true,"prompt_eval_count":{count},"eval_count":{count}}}"#);
        let found = scan(NATIVE, answer.as_bytes());
        assert_eq!((found.prompt, found.completion, found.malformed), (Some(0), Some(0), false), "{count}");
    }
    let max = format!(r#"{{"done":true,"prompt_eval_count":{},"eval_count":0}}"#, u64::MAX);
    assert_eq!(scan(NATIVE, max.as_bytes()).prompt, Some(u64::MAX));
}

#[test]
fn the_first_model_is_kept() {
    let answer = concat!(r#"{"model":"first","done":false}"#, "\n", r#"{"model":"second","done":true,"eval_count":1}"#);
    assert_eq!(scan(NATIVE, answer.as_bytes()).model.as_deref(), Some("first"));
}

#[test]
fn deep_nesting_is_skipped_without_limit() {
    let depth = 100_000;
    let mut answer = String::from(r#"{"model":"m","message":{"tool_calls":[{"x":"#);
    answer += &"[".repeat(depth);
    answer += r#""\"]}[{\\""#;
    answer += &"]".repeat(depth);
    answer += r#"}]},"done":true,"prompt_eval_count":3,"eval_count":4}"#;
    let found = scan(NATIVE, answer.as_bytes());
    assert_eq!(found, counted("m", 3, 4, 0));
    let shallow = r#"{"a":[[[[[[[[[[[[[[[[[[[[{"b":"]}"}]]]]]]]]]]]]]]]]]]]],"done":true,"eval_count":9,"model":"m"}"#;
    assert_eq!(scan_every_way(NATIVE, shallow.as_bytes()), counted("m", 0, 9, 0));
}

#[test]
fn malformed_answers_are_flagged_and_not_counted() {
    for answer in [
        &br#"{"model":"m","done":true,"eval_count":1"#[..], // cut: not flagged, not counted
        br#"{"model":"m" "done":true,"eval_count":1}"#,
        br#"{"model":"m","done":tru,"eval_count":1}"#,
        br#"{"model":"m","done":true,"eval_count":1]"#,
        br#"{model:"m","done":true,"eval_count":1}"#,
        b"{\"model\":\"m\x01\",\"done\":true,\"eval_count\":1}",
        br#"{"model":"m\x","done":true,"eval_count":1}"#,
        br#"{"model":"m\u12x4","done":true,"eval_count":1}"#,
        br#"<html>502 Bad Gateway</html>"#,
    ] {
        let found = scan(NATIVE, answer);
        assert_eq!(found.completion, None, "{}", String::from_utf8_lossy(answer));
        assert_eq!(found.malformed, !answer.ends_with(b"1"), "{}", String::from_utf8_lossy(answer));
    }
    // What came before the damage stays counted, and the next line starts afresh.
    // (A line that cannot carry the counts is passed over, not checked: its damage is not seen.)
    let answer = concat!(r#"{"model":"m","done":false}"#, "\n", r#"{"done":false"#, "}}\n", r#"{"done":false}"#);
    let found = scan(NATIVE, answer.as_bytes());
    assert_eq!(found.chunks, 3);
    let answer = concat!(
        r#"{"model":"m","done":false}"#,
        "\n",
        r#"{"done":tru,"x":1}"#,
        "\n",
        r#"{"done":true,"eval_count":4}"#
    );
    let found = scan(NATIVE, answer.as_bytes());
    assert_eq!((found.completion, found.malformed), (Some(4), true));
}

#[test]
fn plain_lines_are_passed_over_only_when_they_cannot_count() {
    assert_eq!(plain_chunk_line(br#"{"model":"m","response":"The","done":false}"#), Some(true));
    assert_eq!(plain_chunk_line(br#"{"model":"m","created_at":"t","response":"d_","done" : false}"#), Some(true));
    assert_eq!(plain_chunk_line(br#"{"model":"m"}"#), Some(false));
    for counting in [
        &br#"{"model":"m","response":"{[\"","done":false}"#[..],
        br#"{"model":"m","done":true}"#,
        br#"{"model":"m","done" : true}"#,
        br#"{"model":"m","x":{"done":true},"done":false}"#,
        br#"{"model":"m","prompt_eval_count":3}"#,
        br#"{"model":"m","eval_count":3,"done":false}"#,
        br#"{"model":"m"}{"done":true}"#,
    ] {
        assert_eq!(plain_chunk_line(counting), None, "{}", String::from_utf8_lossy(counting));
    }
}

#[test]
fn a_stream_reads_the_same_whole_and_byte_by_byte() {
    let mut answer = String::new();
    for _ in 0..50 {
        answer += "{\"model\":\"m\",\"response\":\"a\\\"b\",\"done\":false}\n{\"model\":\"m\",\"response\":\"x\",\"done\":false}\n";
    }
    answer += r#"{"model":"m","response":"","done":true,"prompt_eval_count":7,"eval_count":100}"#;
    answer += "\n";
    let whole = scan(NATIVE, answer.as_bytes());
    let mut scanner = UsageScanner::new(NATIVE);
    for byte in answer.as_bytes() {
        scanner.feed(std::slice::from_ref(byte));
    }
    assert_eq!((whole.prompt, whole.completion, whole.chunks), (Some(7), Some(100), 100));
    assert_eq!(
        (scanner.prompt_tokens(), scanner.completion_tokens(), scanner.token_chunks()),
        (Some(7), Some(100), 100)
    );
}

#[test]
fn native_lines_read_the_same_however_split() {
    // Lines the fast path passes over, lines it must not, and damage, in random orders,
    // split at every point: the counts are the tokenizer's every time.
    let lines: [&[u8]; 14] = [
        br#"{"model":"m","response":"The","done":false}"#,
        br#"{"model":"other","response":"x","done":false}"#,
        br#"{"model":"m","done":true,"prompt_eval_count":3,"eval_count":5}"#,
        br#"{"model":"m","done" : true,"eval_count":9}"#,
        br#"{"x":{"done":true,"eval_count":1},"done":false}"#,
        br#"{"done":true,"eval_count":2}"#,
        br#"{"prompt_eval_count":4}"#,
        br#"{"done":tru,"eval_count":1}"#,
        br#"{"done":false"#,
        br#"{"done":false}}"#,
        br#"{"response":"a"}b","done":false}"#,
        br#"[1,2]"#,
        br#"  "#,
        b"{\"response\":\"\x01\",\"done\":true,\"eval_count\":3}",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |below: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % below as u64) as usize
    };
    for _ in 0..300 {
        let mut answer = Vec::new();
        for _ in 0..1 + next(6) {
            answer.extend_from_slice(lines[next(lines.len())]);
            answer.push(b'\n');
        }
        let whole = scan(NATIVE, &answer);
        for split in 0..=answer.len() {
            let mut pieces = UsageScanner::new(NATIVE);
            pieces.feed(&answer[..split]);
            pieces.feed(&answer[split..]);
            let found = (pieces.model().map(String::from), pieces.prompt_tokens(), pieces.completion_tokens());
            assert_eq!(
                found,
                (whole.model.clone(), whole.prompt, whole.completion),
                "{}",
                String::from_utf8_lossy(&answer)
            );
        }
    }
}

#[test]
fn an_error_answer_counts_nothing() {
    let found = scan(NATIVE, br#"{"error":"model \"x\" not found, try pulling it first"}"#);
    assert_eq!(found, Found { model: None, prompt: None, completion: None, so_far: 0, chunks: 0, malformed: false });
}

// OpenAI-shaped answers.

#[test]
fn openai_answers_in_one_piece() {
    let chat = concat!(
        r#"{"id":"chatcmpl-42","object":"chat.completion","created":1735689600,"model":"llama3.2","#,
        r#""system_fingerprint":"fp_ollama","choices":[{"index":0,"message":{"role":"assistant","#,
        r#""content":"\"usage\":{\"prompt_tokens\":1}"},"finish_reason":"stop"}],"#,
        r#""usage":{"prompt_tokens":23,"completion_tokens":9,"total_tokens":32}}"#,
        "\n"
    );
    assert_eq!(scan_every_way(OPENAI_JSON, chat.as_bytes()), counted("llama3.2", 23, 9, 0));
    let completion = concat!(
        r#"{"id":"cmpl-7","object":"text_completion","created":1735689600,"model":"llama3.2","#,
        r#""system_fingerprint":"fp_ollama","choices":[{"text":"Hello","index":0,"finish_reason":"stop"}],"#,
        r#""usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}"#
    );
    assert_eq!(scan(OPENAI_JSON, completion.as_bytes()), counted("llama3.2", 4, 2, 0));
    let embeddings = concat!(
        r#"{"object":"list","data":[{"object":"embedding","embedding":[0.1,-0.2],"index":0}],"#,
        r#""model":"all-minilm","usage":{"prompt_tokens":5,"total_tokens":5}}"#
    );
    assert_eq!(scan_every_way(OPENAI_JSON, embeddings.as_bytes()), counted("all-minilm", 5, 0, 0));
    let responses = concat!(
        r#"{"id":"resp_1","object":"response","created_at":1,"completed_at":2,"status":"completed","#,
        r#""incomplete_details":null,"model":"gpt-oss:20b","output":[{"id":"msg_1","type":"message","#,
        r#""content":[{"type":"output_text","text":"hi","annotations":[],"logprobs":[]}]}],"#,
        r#""usage":{"input_tokens":12,"output_tokens":3,"total_tokens":15,"#,
        r#""input_tokens_details":{"cached_tokens":0},"output_tokens_details":{"reasoning_tokens":0}}}"#
    );
    assert_eq!(scan_every_way(OPENAI_JSON, responses.as_bytes()), counted("gpt-oss:20b", 12, 3, 0));
}

fn chat_chunk(content: &str) -> String {
    format!(
        r#"data: {{"id":"chatcmpl-42","object":"chat.completion.chunk","created":1735689600,"model":"llama3.2","system_fingerprint":"fp_ollama","choices":[{{"index":0,"delta":{{"role":"assistant","content":{content}}},"finish_reason":null}}]}}"#
    ) + "\n\n"
}

const CHAT_FINISH: &str = concat!(
    r#"data: {"id":"chatcmpl-42","object":"chat.completion.chunk","created":1735689600,"model":"llama3.2","#,
    r#""system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    "\n\n"
);

const CHAT_USAGE: &str = concat!(
    r#"data: {"id":"chatcmpl-42","object":"chat.completion.chunk","created":1735689600,"model":"llama3.2","#,
    r#""system_fingerprint":"fp_ollama","choices":[],"#,
    r#""usage":{"prompt_tokens":15,"completion_tokens":3,"total_tokens":18}}"#,
    "\n\n"
);

/// A streamed chat answer as Ollama writes it, with or without the usage asked for.
fn chat_stream(with_usage: bool) -> String {
    let mut answer = chat_chunk(r#""""#);
    for content in [r#""Hel""#, r#""lo \"usage\":{} 😀""#, r#""!""#] {
        answer += &chat_chunk(content);
    }
    answer += CHAT_FINISH;
    if with_usage {
        answer += CHAT_USAGE;
    }
    answer + "data: [DONE]\n\n"
}

#[test]
fn openai_chat_stream_with_usage() {
    let answer = chat_stream(true);
    assert_eq!(scan_every_way(OPENAI_SSE, answer.as_bytes()), counted("llama3.2", 15, 3, 3));
    let mut scanner = UsageScanner::new(OPENAI_SSE);
    scanner.feed(answer.as_bytes());
    assert!(scanner.saw_done_marker() && scanner.is_final());
}

#[test]
fn openai_chat_stream_without_usage_counts_chunks() {
    let found = scan_every_way(OPENAI_SSE, chat_stream(false).as_bytes());
    let expected = Found {
        model: Some("llama3.2".into()),
        prompt: None,
        completion: None,
        so_far: 3,
        chunks: 3,
        malformed: false,
    };
    assert_eq!(found, expected);
}

fn completion_chunk(text: &str, finish: &str, usage: bool) -> String {
    let usage = if usage { r#","usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}"# } else { "" };
    format!(
        r#"data: {{"id":"cmpl-7","object":"text_completion","created":1735689600,"choices":[{{"text":{text},"index":0,"finish_reason":{finish}}}],"model":"llama3.2","system_fingerprint":"fp_ollama"{usage}}}"#
    ) + "\n\n"
}

/// A streamed /v1/completions answer as Ollama writes it.
fn completion_stream(with_usage: bool) -> String {
    let mut answer = String::new();
    for text in [r#""Once""#, r#"" upon""#, r#""""#, r#"" a""#] {
        answer += &completion_chunk(text, "null", with_usage);
    }
    answer += &completion_chunk(r#"" time""#, r#""stop""#, with_usage);
    if with_usage {
        answer += concat!(
            r#"data: {"id":"cmpl-7","object":"text_completion","created":1735689600,"choices":[],"#,
            r#""model":"llama3.2","system_fingerprint":"fp_ollama","#,
            r#""usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#,
            "\n\n"
        );
    }
    answer + "data: [DONE]\n\n"
}

#[test]
fn openai_completion_stream_ignores_the_zero_usage_in_every_chunk() {
    let answer = completion_stream(true);
    assert_eq!(scan_every_way(OPENAI_SSE, answer.as_bytes()), counted("llama3.2", 3, 5, 4));
    // Cut before the usage chunk: the zero usages have not made it final.
    let cut = answer.find(r#""choices":[]"#).unwrap();
    let mut scanner = UsageScanner::new(OPENAI_SSE);
    scanner.feed(&answer.as_bytes()[..cut]);
    assert!(!scanner.is_final());
    assert_eq!(scanner.completion_tokens_so_far(), 4);
}

#[test]
fn openai_responses_stream() {
    // Go marshals these events from maps: members in name order.
    let answer = concat!(
        "event: response.created\n",
        r#"data: {"response":{"id":"resp_1","model":"gpt-oss:20b","output":[],"status":"in_progress","usage":null},"sequence_number":0,"type":"response.created"}"#,
        "\n\n",
        "event: response.output_text.delta\n",
        r#"data: {"content_index":0,"delta":"Hi","item_id":"msg_1","logprobs":[],"output_index":0,"sequence_number":4,"type":"response.output_text.delta"}"#,
        "\n\n",
        "event: response.reasoning_summary_text.delta\n",
        r#"data: {"delta":"hmm","item_id":"rs_1","output_index":0,"sequence_number":2,"summary_index":0,"type":"response.reasoning_summary_text.delta"}"#,
        "\n\n",
        "event: response.output_text.done\n",
        r#"data: {"content_index":0,"item_id":"msg_1","logprobs":[],"output_index":0,"sequence_number":5,"text":"Hi","type":"response.output_text.done"}"#,
        "\n\n",
        "event: response.completed\n",
        r#"data: {"response":{"completed_at":2,"id":"resp_1","model":"gpt-oss:20b","output":[{"content":[{"text":"Hi","type":"output_text"}],"id":"msg_1","type":"message"}],"status":"completed","#,
        r#""usage":{"input_tokens":30,"input_tokens_details":{"cached_tokens":0},"output_tokens":12,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":42}},"sequence_number":6,"type":"response.completed"}"#,
        "\n\n",
    );
    assert_eq!(scan_every_way(OPENAI_SSE, answer.as_bytes()), counted("gpt-oss:20b", 30, 12, 2));
}

#[test]
fn event_stream_framing_variants() {
    // CRLF and CR line ends, comments, a field without its space, data over two lines,
    // unknown fields, and a data value that is not JSON.
    let answer = concat!(
        ": keep-alive\r\n\r\n",
        "id: 1\r\ndata:{\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\n",
        "retry: 10\rdata: {\"choices\":[{\"delta\":\r",
        "data: {\"content\":\"b\"}}]}\r\r",
        "data: not json\n\n",
        "data\n\n",
        "event: whatever\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n",
        "data: [DONE]\n\n",
    );
    let found = scan_every_way(OPENAI_SSE, answer.as_bytes());
    assert_eq!(found, Found { malformed: true, ..counted("m", 1, 2, 2) });
    let mut scanner = UsageScanner::new(OPENAI_SSE);
    scanner.feed(answer.as_bytes());
    assert!(scanner.saw_done_marker());
    // "[DONE]" split over two data lines is not the marker.
    let mut scanner = UsageScanner::new(OPENAI_SSE);
    scanner.feed(b"data: [DO\ndata: NE]\n\n");
    assert!(!scanner.saw_done_marker());
    // An event's JSON that does not end with the event is dropped.
    let found = scan(OPENAI_SSE, b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}\n\ndata: }\n\n");
    assert_eq!((found.prompt, found.malformed), (None, true));
}

#[test]
fn usage_without_choices_only_counts_in_a_stream_at_its_top_level() {
    let answer = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"x\"},\"usage\":{\"prompt_tokens\":9}}],\"model\":\"m\"}\n\n",
        "data: {\"x\":{\"usage\":{\"prompt_tokens\":9}},\"usage\":null,\"choices\":[]}\n\n",
    );
    let found = scan(OPENAI_SSE, answer.as_bytes());
    assert_eq!((found.prompt, found.chunks), (None, 1));
}

// Anthropic-shaped answers, as Ollama writes them.

#[test]
fn anthropic_answer_in_one_piece() {
    let answer = concat!(
        r#"{"id":"msg_1","type":"message","role":"assistant","model":"llama3.2","#,
        r#""content":[{"type":"text","text":"Hi \"usage\""}],"stop_reason":"end_turn","#,
        r#""usage":{"input_tokens":10,"output_tokens":2}}"#
    );
    assert_eq!(scan_every_way(ANTHROPIC_JSON, answer.as_bytes()), counted("llama3.2", 10, 2, 0));
}

fn anthropic_event(name: &str, data: &str) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn anthropic_stream(delta_usage: &str) -> String {
    [
        anthropic_event(
            "message_start",
            r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"llama3.2","content":[],"usage":{"input_tokens":14,"output_tokens":0}}}"#,
        ),
        anthropic_event(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
        ),
        anthropic_event(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Hm"}}"#,
        ),
        anthropic_event("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
        anthropic_event(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hi"}}"#,
        ),
        anthropic_event(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":" there"}}"#,
        ),
        anthropic_event(
            "message_delta",
            &format!(r#"{{"type":"message_delta","delta":{{"stop_reason":"end_turn"}},"usage":{delta_usage}}}"#),
        ),
        anthropic_event("message_stop", r#"{"type":"message_stop"}"#),
    ]
    .concat()
}

#[test]
fn anthropic_stream_takes_message_delta_usage() {
    let answer = anthropic_stream(r#"{"input_tokens":17,"output_tokens":3}"#);
    assert_eq!(scan_every_way(ANTHROPIC_SSE, answer.as_bytes()), counted("llama3.2", 17, 3, 3));
    // Without input_tokens in message_delta, message_start's.
    let answer = anthropic_stream(r#"{"output_tokens":3}"#);
    assert_eq!(scan(ANTHROPIC_SSE, answer.as_bytes()), counted("llama3.2", 14, 3, 3));
    // Without `event:` lines, the JSON's type does it.
    let answer: String = answer.lines().filter(|line| !line.starts_with("event:")).flat_map(|l| [l, "\n"]).collect();
    assert_eq!(scan(ANTHROPIC_SSE, answer.as_bytes()), counted("llama3.2", 14, 3, 3));
}

#[test]
fn anthropic_stream_cut_short() {
    let answer = anthropic_stream(r#"{"input_tokens":17,"output_tokens":3}"#);
    let cut = answer.find("event: message_delta").unwrap();
    let found = scan(ANTHROPIC_SSE, &answer.as_bytes()[..cut]);
    let expected = Found {
        model: Some("llama3.2".into()),
        prompt: Some(14),
        completion: None,
        so_far: 3,
        chunks: 3,
        malformed: false,
    };
    assert_eq!(found, expected);
}

#[test]
fn answer_kinds() {
    let kind = |path, content_type: &str| AnswerKind::for_answer(path, content_type.as_bytes());
    assert_eq!(kind("/api/chat", "application/x-ndjson"), Some(NATIVE));
    assert_eq!(kind("/api/generate", "application/json; charset=utf-8"), Some(NATIVE));
    assert_eq!(kind("/api/embed", "Application/JSON"), Some(NATIVE));
    assert_eq!(kind("/v1/chat/completions", "text/event-stream"), Some(OPENAI_SSE));
    assert_eq!(kind("/v1/responses", " text/event-stream ; charset=utf-8"), Some(OPENAI_SSE));
    assert_eq!(kind("/v1/embeddings", "application/json"), Some(OPENAI_JSON));
    assert_eq!(kind("/v1/messages", "text/event-stream"), Some(ANTHROPIC_SSE));
    assert_eq!(kind("/v1/messages", "application/json"), Some(ANTHROPIC_JSON));
    assert_eq!(kind("/api/tags", "application/json"), None);
    assert_eq!(kind("/api/chat", "text/plain"), None);
    assert_eq!(kind("/api/chat", ""), None);
    assert!(accepts_stream_options("/v1/chat/completions") && accepts_stream_options("/v1/completions"));
    assert!(!accepts_stream_options("/v1/responses") && !accepts_stream_options("/api/chat"));
}

// The include_usage rewrite.

fn strip_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<u8>, UsageStripper) {
    let mut stripper = UsageStripper::new();
    let mut out = Vec::new();
    for chunk in chunks {
        stripper.feed(chunk, &mut out);
        assert!(stripper.held_len() <= MAX_HELD_EVENT);
    }
    stripper.finish(&mut out);
    (out, stripper)
}

/// Strips `answer` whole, split at every point, a byte at a time and in random pieces,
/// and checks each gives `expected`.
fn strip_every_way(answer: &[u8], expected: &[u8]) -> UsageStripper {
    let (out, stripper) = strip_chunks([answer]);
    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(expected));
    for at in 0..=answer.len() {
        let (a, b) = answer.split_at(at);
        assert_eq!(strip_chunks([a, b]).0, expected, "split at {at}");
    }
    assert_eq!(strip_chunks(answer.chunks(1)).0, expected);
    let mut random = Lcg(answer.len() as u64);
    for _ in 0..50 {
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < answer.len() {
            let len = 1 + random.below(60);
            pieces.push(&answer[at..(at + len).min(answer.len())]);
            at += len;
        }
        assert_eq!(strip_chunks(pieces).0, expected);
    }
    stripper
}

#[test]
fn chat_stream_gets_back_the_bytes_it_would_have_had() {
    let stripper = strip_every_way(chat_stream(true).as_bytes(), chat_stream(false).as_bytes());
    assert_eq!((stripper.removed_events(), stripper.removed_members(), stripper.oversized_events()), (1, 0, 0));
}

#[test]
fn completion_stream_gets_back_the_bytes_it_would_have_had() {
    let stripper = strip_every_way(completion_stream(true).as_bytes(), completion_stream(false).as_bytes());
    assert_eq!((stripper.removed_events(), stripper.removed_members()), (1, 5));
}

#[test]
fn openai_style_usage_null_is_removed_too() {
    let asked = concat!(
        "data: {\"usage\":null,\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}], \"usage\" : null }\n\n",
        "data: {\"usage\":null}\n\n",
        "data: {\"id\":1,\"choices\":[ ],\"usage\":{\"prompt_tokens\":1}}\n\n",
        "data: [DONE]\n\n",
    );
    let plain = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}] }\n\n",
        "data: {}\n\n",
        "data: [DONE]\n\n",
    );
    let stripper = strip_every_way(asked.as_bytes(), plain.as_bytes());
    assert_eq!((stripper.removed_events(), stripper.removed_members()), (1, 3));
}

#[test]
fn stripper_leaves_other_events_alone() {
    let answer = concat!(
        ": comment\n\n",
        "data: not json, \"usage\":null\n\n",
        "data: {\"choices\":[],\"usage\":\"text\"}\n\n",
        "data: {\"choices\":[],\"usage\":{},\"usage\":{}}\n\n",
        "data: {\"a\":{\"usage\":null}}\n\n",
        "data: {\"choices\":[]}\ndata: {\"usage\":{}}\n\n",
        "event: x\nid: 2\n\n",
        "\n\n",
        "data: {\"choices\":[],\"usage\":{}}",
    );
    let stripper = strip_every_way(answer.as_bytes(), answer.as_bytes());
    assert_eq!((stripper.removed_events(), stripper.removed_members()), (0, 0));
}

#[test]
fn stripper_handles_crlf_and_cr_line_ends() {
    let asked = "event: e\r\ndata: {\"choices\":[{}],\"usage\":null}\r\n\r\ndata: {\"choices\":[],\"usage\":{}}\r\rdata: [DONE]\r\n\r\n";
    let plain = "event: e\r\ndata: {\"choices\":[{}]}\r\n\r\ndata: [DONE]\r\n\r\n";
    strip_every_way(asked.as_bytes(), plain.as_bytes());
    // A CR blank line at the very end.
    strip_every_way(b"data: {\"choices\":[],\"usage\":{}}\r\r", b"");
}

#[test]
fn stripper_passes_each_event_on_as_soon_as_it_ends() {
    let answer = completion_stream(true);
    let expected = completion_stream(false);
    let mut stripper = UsageStripper::new();
    let mut out = Vec::new();
    for event in answer.split_inclusive("\n\n") {
        let before = out.len();
        stripper.feed(event.as_bytes(), &mut out);
        assert_eq!(stripper.held_len(), 0);
        assert!(expected.as_bytes().starts_with(&out));
        assert!(out.len() > before || event.contains(r#""choices":[]"#));
    }
    assert_eq!(out, expected.as_bytes());
    // Mid-event, that event is held and nothing else.
    let mut stripper = UsageStripper::new();
    let mut out = Vec::new();
    stripper.feed(b"data: [DONE]\n\ndata: {\"a\"", &mut out);
    assert_eq!((out.as_slice(), stripper.held_len()), (&b"data: [DONE]\n\n"[..], 10));
}

#[test]
fn an_oversized_event_passes_unchanged_and_rewriting_resumes() {
    let big = format!("data: {{\"choices\":[{{\"text\":\"{}\"}}],\"usage\":null}}\n\n", "x".repeat(MAX_HELD_EVENT));
    let answer = format!("{}{big}{}", completion_stream(true), completion_stream(true));
    let expected = format!("{}{big}{}", completion_stream(false), completion_stream(false));
    for piece in [1, 100, 4096, answer.len()] {
        let (out, stripper) = strip_chunks(answer.as_bytes().chunks(piece));
        assert_eq!(out, expected.as_bytes(), "in pieces of {piece}");
        assert_eq!((stripper.oversized_events(), stripper.removed_events()), (1, 2));
    }
}

#[test]
fn add_include_usage_to_streamed_requests() {
    let add = |body: &str| add_include_usage(body.as_bytes()).map(|b| String::from_utf8(b).unwrap());
    assert_eq!(
        add(r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"}"}]}"#).as_deref(),
        Some(
            r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"}"}],"stream_options":{"include_usage":true}}"#
        )
    );
    assert_eq!(
        add(" {\n  \"stream\" : true\n}\r\n ").as_deref(),
        Some(" {\n  \"stream\" : true\n,\"stream_options\":{\"include_usage\":true}}\r\n ")
    );
    // Go's case folding, `ſ` included; the last `stream` wins; `null` leaves it.
    assert!(add(r#"{"STREAM":true}"#).is_some());
    assert!(add(r#"{"ſtream":true}"#).is_some());
    assert!(add(r#"{"stream":false,"stream":true}"#).is_some());
    assert!(add(r#"{"stream":true,"stream":null}"#).is_some());
    assert!(add(r#"{"stream":true,"stream":false}"#).is_none());
    // Stream options that do not ask: absent, null, empty, false, or overridden.
    for options in [
        r#"null"#,
        r#"{}"#,
        r#"{"include_usage":false}"#,
        r#"{"include_usage":null}"#,
        r#"{"include_usage":true,"include_usage":false}"#,
        r#"{"other":1}"#,
    ] {
        let body = format!(r#"{{"stream":true,"stream_options":{options}}}"#);
        assert!(add(&body).is_some(), "{options}");
    }
    assert!(add(r#"{"stream_options":{"include_usage":true},"stream_options":null,"stream":true}"#).is_some());
    // Already asked: nothing to do.
    for options in
        [r#"{"include_usage":true}"#, r#"{"Include_Usage":true}"#, r#"{"include_usage":true,"include_usage":null}"#]
    {
        let body = format!(r#"{{"stream":true,"stream_options":{options}}}"#);
        assert!(add(&body).is_none(), "{options}");
    }
    // A second object merges into the first in Go: include_usage stays true.
    assert!(add(r#"{"stream":true,"stream_options":{"include_usage":true},"STREAM_OPTIONS":{}}"#).is_none());
    assert!(add(r#"{"stream":true,"stream_options":null,"stream_options":{"include_usage":true}}"#).is_none());
    // Not streamed, not an object, not JSON, or of a type Go refuses.
    for body in [
        r#"{"model":"m"}"#,
        r#"{"stream":false}"#,
        r#"{"stream":null}"#,
        r#"{"stream":"true"}"#,
        r#"{"stream":1}"#,
        r#"{"stream":true,"stream_options":true}"#,
        r#"{"stream":true,"stream_options":[]}"#,
        r#"{"stream":true,"stream_options":{"include_usage":1}}"#,
        r#"[{"stream":true}]"#,
        r#"{"stream":true"#,
        r#"{"stream":true}{}"#,
        "",
    ] {
        assert!(add(body).is_none(), "{body}");
    }
}

#[test]
fn added_member_is_what_go_would_read() {
    for body in [
        r#"{"stream":true}"#,
        r#"{"stream":true,"stream_options":null}"#,
        r#"{"stream":true,"stream_options":{"include_usage":false,"x":[1]}}"#,
    ] {
        let out = add_include_usage(body.as_bytes()).unwrap();
        let members = json::top_level_members(&out).unwrap();
        let last = members.last().unwrap();
        assert_eq!((&*last.name, &out[last.value.clone()]), ("stream_options", &br#"{"include_usage":true}"#[..]));
        assert_eq!(&out[..body.len() - 1], &body.as_bytes()[..body.len() - 1]);
        // Asking twice changes nothing more.
        assert_eq!(add_include_usage(&out), None);
    }
}

#[test]
fn whole_round_trip_through_scanner_and_stripper() {
    // What the glue does: scan what Ollama sends, strip it, send the rest.
    let answer = chat_stream(true);
    let mut scanner = UsageScanner::new(OPENAI_SSE);
    let mut stripper = UsageStripper::new();
    let mut out = Vec::new();
    for chunk in answer.as_bytes().chunks(17) {
        scanner.feed(chunk);
        stripper.feed(chunk, &mut out);
    }
    stripper.finish(&mut out);
    assert_eq!(out, chat_stream(false).as_bytes());
    assert_eq!(found(&scanner), counted("llama3.2", 15, 3, 3));
}

#[test]
fn any_bytes_split_anywhere_give_the_same_result() {
    // Pieces of JSON and SSE, and some that are neither, strung together at random: no
    // panic, and the same result whole and in any pieces.
    const PIECES: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b",",
        b":",
        b"\"",
        b"\\",
        b"\\u",
        b"d83d",
        b"\"model\"",
        b"\"usage\"",
        b"\"choices\"",
        b"\"done\"",
        b"\"type\"",
        b"\"delta\"",
        b"\"content\"",
        b"\"message\"",
        b"\"response\"",
        b"true",
        b"false",
        b"null",
        b"123",
        b"-1.5e3",
        b"\"prompt_tokens\"",
        b"\"output_tokens\"",
        b"\"eval_count\"",
        b"\"message_delta\"",
        b"data: ",
        b"data:",
        b"event: ",
        b"message_start",
        b"\n",
        b"\r",
        b"\r\n",
        b"\n\n",
        b" ",
        b"[DONE]",
        "\u{e9}".as_bytes(),
        b"\xff",
        b"\x01",
    ];
    let kinds = [NATIVE, OPENAI_JSON, OPENAI_SSE, ANTHROPIC_JSON, ANTHROPIC_SSE];
    let mut random = Lcg(11);
    for _ in 0..3000 {
        let mut input = Vec::new();
        for _ in 0..random.below(80) {
            input.extend_from_slice(PIECES[random.below(PIECES.len())]);
        }
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < input.len() {
            let len = 1 + random.below(8);
            pieces.push(&input[at..(at + len).min(input.len())]);
            at += len;
        }
        for kind in kinds {
            assert_eq!(scan_chunks(kind, pieces.iter().copied()), scan(kind, &input));
        }
        assert_eq!(strip_chunks(pieces.iter().copied()).0, strip_chunks([&input[..]]).0);
    }
}
