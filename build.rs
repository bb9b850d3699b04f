//! Passes what nginx-sys learned about the nginx being built against on to the module's code.
//!
//! nginx-sys must be a direct dependency for its `DEP_NGINX_*` exports to reach this script.

/// nginx 1.23.0 links repeated headers through `ngx_table_elt_t.next`; older versions have no
/// such field.
const LINKED_HEADERS_SINCE: u64 = 1_023_000;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(ngx_linked_headers)");
    if std::env::var_os("CARGO_FEATURE_MODULE").is_none() {
        return; // the plain-Rust logic alone: no nginx involved
    }
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    let version: u64 = std::env::var("DEP_NGINX_VERSION_NUMBER")
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("nginx-sys exports DEP_NGINX_VERSION_NUMBER");
    if version >= LINKED_HEADERS_SINCE {
        println!("cargo::rustc-cfg=ngx_linked_headers");
    }

    // Tell the Makefile and the tests which nginx build this module belongs to: the module
    // loads only into that exact nginx.
    println!("cargo::rerun-if-env-changed=DEP_NGINX_BUILD_DIR");
    if let (Ok(build_dir), Ok(out_dir)) = (std::env::var("DEP_NGINX_BUILD_DIR"), std::env::var("OUT_DIR")) {
        // OUT_DIR is <target>/<profile>/build/<crate>-<hash>/out
        let profile_dir = std::path::Path::new(&out_dir).ancestors().nth(3).expect("cargo's layout");
        std::fs::write(profile_dir.join("nginx-build-dir"), format!("{build_dir}\n")).expect("write nginx-build-dir");
    }
}
