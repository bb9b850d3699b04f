//! Why the gate itself answered a request instead of Ollama: every refusal's reason, in one
//! list, as the glue records it and `metrics` counts it (`ollama_auth_refused_total`).

/// Why the gate itself answered a request: the `reason` of `ollama_auth_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    NoCredential,
    MalformedCredential,
    UnknownKey,
    WrongPassword,
    UnknownUser,
    Expired,
    ForbiddenScope,
    ForbiddenModel,
    BadRequest,
    TooLarge,
    RateLimited,
    /// The zone had no room for a limited key's counters (or the key's limits cannot be counted
    /// here): it admits no one.
    Unenforceable,
}

impl RefusalReason {
    pub const ALL: [RefusalReason; 12] = [
        RefusalReason::NoCredential,
        RefusalReason::MalformedCredential,
        RefusalReason::UnknownKey,
        RefusalReason::WrongPassword,
        RefusalReason::UnknownUser,
        RefusalReason::Expired,
        RefusalReason::ForbiddenScope,
        RefusalReason::ForbiddenModel,
        RefusalReason::BadRequest,
        RefusalReason::TooLarge,
        RefusalReason::RateLimited,
        RefusalReason::Unenforceable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::NoCredential => "no_credential",
            RefusalReason::MalformedCredential => "malformed_credential",
            RefusalReason::UnknownKey => "unknown_key",
            RefusalReason::WrongPassword => "wrong_password",
            RefusalReason::UnknownUser => "unknown_user",
            RefusalReason::Expired => "expired",
            RefusalReason::ForbiddenScope => "forbidden_scope",
            RefusalReason::ForbiddenModel => "forbidden_model",
            RefusalReason::BadRequest => "bad_request",
            RefusalReason::TooLarge => "too_large",
            RefusalReason::RateLimited => "rate_limited",
            RefusalReason::Unenforceable => "limits_unenforceable",
        }
    }

    /// Its place in [`Self::ALL`], and in the zone's array of counts.
    pub fn index(self) -> usize {
        self as usize
    }
}
