//! Why the gate itself answered a request instead of Ollama: every refusal's reason, in one
//! list, as the glue records it and `metrics` counts it (`ollama_auth_refused_total`), and the
//! refusal itself (status, kind, words, reason), which `errors` gives the endpoint's shape.

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

/// The gate's answer in place of the request: status, the kind of error and the reason (the
/// body's text and the error log's), and the reason for the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub kind: &'static str,
    pub message: String,
    pub why: RefusalReason,
}

impl Refusal {
    pub fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal { status: 400, kind: "bad request", message: message.into(), why: RefusalReason::BadRequest }
    }

    pub fn forbidden(message: impl Into<String>, why: RefusalReason) -> Refusal {
        Refusal { status: 403, kind: "forbidden", message: message.into(), why }
    }

    pub fn too_large(message: impl Into<String>, why: RefusalReason) -> Refusal {
        Refusal { status: 413, kind: "request entity too large", message: message.into(), why }
    }

    pub fn rate_limited(message: impl Into<String>) -> Refusal {
        Refusal { status: 429, kind: "rate limited", message: message.into(), why: RefusalReason::RateLimited }
    }

    pub fn unavailable(message: impl Into<String>, why: RefusalReason) -> Refusal {
        Refusal { status: 503, kind: "service unavailable", message: message.into(), why }
    }
}
