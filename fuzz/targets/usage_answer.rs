//! Ollama's answers as the usage reader sees them: any bytes, in any two pieces, for every kind
//! of answer. Reading never panics, and two pieces read as the whole does; the include_usage
//! stripper never panics and never grows an answer.
use ngx_ollama_auth::usage::{add_include_usage, AnswerKind, Dialect, Framing, UsageScanner, UsageStripper};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Some((&selector, answer)) = data.split_first() else { return };
        let dialect = [Dialect::Native, Dialect::OpenAi, Dialect::Anthropic][usize::from(selector % 3)];
        let framing = if selector & 4 == 0 { Framing::Json } else { Framing::EventStream };
        let kind = AnswerKind { dialect, framing };
        let split = usize::from(selector >> 3) * answer.len() / 32;

        let mut whole = UsageScanner::new(kind);
        whole.feed(answer);
        let mut pieces = UsageScanner::new(kind);
        pieces.feed(&answer[..split]);
        pieces.feed(&answer[split..]);
        assert_eq!(whole.model(), pieces.model());
        assert_eq!(whole.prompt_tokens(), pieces.prompt_tokens());
        assert_eq!(whole.completion_tokens(), pieces.completion_tokens());
        let _ = whole.completion_tokens_so_far();

        let mut stripper = UsageStripper::new();
        let mut out = Vec::new();
        stripper.feed(&answer[..split], &mut out);
        stripper.feed(&answer[split..], &mut out);
        stripper.finish(&mut out);
        assert!(out.len() <= answer.len(), "stripping only takes out");

        if let Some(asked) = add_include_usage(answer) {
            assert!(asked.len() > answer.len());
        }
    });
}
