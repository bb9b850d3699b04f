//! Several Ollama servers behind one gate: `ollama_auth_fleet <name> { server ...; }` (http)
//! defines a fleet, polled for its models (`poll`) into a shared zone (`shared`);
//! `ollama_auth_use_fleet <name>` (location) routes a location's requests through it
//! (`route`), by the model the request names (`model`, which also gives
//! `$ollama_request_model`); members that fail requests are marked down (`health`). The plain
//! rules are `ngx_ollama_auth::fleet`.

pub mod directive;
pub mod health;
pub mod install;
pub mod model;
pub mod poll;
pub mod route;
pub mod shared;
