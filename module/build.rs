//! Passes what nginx-sys learned about the nginx being built against on to the module's code.
//!
//! nginx-sys must be a direct dependency for its `DEP_NGINX_*` exports to reach this script.

/// nginx 1.23.0 links repeated headers through `ngx_table_elt_t.next`; older versions have no
/// such field.
const LINKED_HEADERS_SINCE: u64 = 1_023_000;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(ngx_linked_headers)");
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    let version: u64 = std::env::var("DEP_NGINX_VERSION_NUMBER")
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("nginx-sys exports DEP_NGINX_VERSION_NUMBER");
    if version >= LINKED_HEADERS_SINCE {
        println!("cargo::rustc-cfg=ngx_linked_headers");
    }

    // Where this nginx's build is, for the Makefile to find (it reads cargo's JSON messages for
    // this script's OUT_DIR): the module loads only into that exact nginx.
    println!("cargo::rerun-if-env-changed=DEP_NGINX_BUILD_DIR");
    if let (Ok(build_dir), Ok(out_dir)) = (std::env::var("DEP_NGINX_BUILD_DIR"), std::env::var("OUT_DIR")) {
        let record = std::path::Path::new(&out_dir).join("nginx-build-dir");
        std::fs::write(record, format!("{build_dir}\n")).expect("write nginx-build-dir");
    }
}
