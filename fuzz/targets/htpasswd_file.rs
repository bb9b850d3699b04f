//! The htpasswd file: parsing never panics, and skipped lines are named by number.
use ngx_ollama_auth::htpasswd::UserTable;
use ngx_ollama_auth::watch::{Counted, Parse};

fn main() {
    afl::fuzz!(|content: &[u8]| {
        let (users, warnings) = UserTable::parse(content);
        let lines = content.split(|&b| b == b'\n').count();
        assert!(warnings.iter().all(|w| w.line >= 1 && w.line <= lines));
        assert!(users.entry_count() <= lines);
    });
}
