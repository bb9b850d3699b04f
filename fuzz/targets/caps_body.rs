//! Request bodies clamped to caps (`caps::apply_caps`): never a panic, and the promises that
//! `caps::check_clamp_consistency` checks hold.
//! The first byte picks the endpoint and whether the key may unload; the rest is the body.
use ngx_ollama_auth::caps::{check_clamp_consistency, Caps, KeepAliveRange};
use ngx_ollama_auth::endpoints::CapTarget;

const TARGETS: [CapTarget; 6] = [
    CapTarget::Native { generates: true },
    CapTarget::Native { generates: false },
    CapTarget::OpenAiMaxTokens,
    CapTarget::Responses,
    CapTarget::Messages,
    CapTarget::Native { generates: true },
];

fn main() {
    let caps = Caps {
        num_ctx: Some(8192),
        num_predict: Some(512),
        keep_alive: Some(KeepAliveRange { min: Some(300), max: Some(1800) }),
    };
    afl::fuzz!(|data: &[u8]| {
        let Some((&first, body)) = data.split_first() else { return };
        let target = TARGETS[usize::from(first & 7) % TARGETS.len()];
        check_clamp_consistency(body, target, &caps, first & 8 != 0);
    });
}
