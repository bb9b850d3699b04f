//! What an admitted request may do: the request and its location read as plain values for
//! `ngx_ollama_auth::judge`, which decides.

use ngx::http::Request;

use super::authenticate::Admission;
use super::clock::now_seconds;
use super::conf::LocConf;
use ngx_ollama_auth::judge::{self, Admitted, Asked, Judgement, Location};

/// What the request asks, as nginx parsed it.
#[inline]
fn asked(request: &Request) -> Asked<'_> {
    let r = request.as_ref();
    Asked {
        method_name: r.method_name.as_bytes(),
        uri: r.uri.as_bytes(),
        target: r.unparsed_uri.as_bytes(),
        args: r.args.as_bytes(),
    }
}

#[inline]
fn location(conf: &LocConf) -> Location<'_> {
    Location {
        path_prefix: conf.path_prefix.as_deref(),
        default_scopes: conf.default_scopes(),
        caps: conf.caps.as_ref(),
        counts_limits: conf.usage_zone().is_some(),
    }
}

/// The verdict on an admitted request.
pub fn judge(request: &Request, conf: &LocConf, admission: &Admission) -> Judgement {
    let admitted = Admitted { options: admission.options.as_ref(), is_user: admission.is_user };
    judge::judge(&asked(request), &location(conf), &admitted, now_seconds())
}

/// Whether a request asks for inference (what occupies the GPU, and what the queue holds).
pub fn is_inference(request: &Request, conf: &LocConf) -> bool {
    judge::is_inference(&asked(request), conf.path_prefix.as_deref())
}
