//! Model names as Ollama reads them, and the `models=` patterns that restrict a key to some.
//!
//! A restriction is only as good as the name it compares: if this module split a name
//! differently from Ollama, a key allowed `llama3` could reach another model by spelling it
//! oddly. So names are split exactly as Ollama's `types/model/name.go` (`ParseName`, `IsValid`)
//! does, after the source-suffix handling of `internal/modelref` (`ParseRef`, `NormalizePullName`)
//! that its handlers apply first. Where Ollama's handlers disagree among themselves, the name is
//! refused (see [`ModelName::parse`]).

use std::borrow::Cow;
use std::fmt;

pub const DEFAULT_HOST: &str = "registry.ollama.ai";
pub const DEFAULT_NAMESPACE: &str = "library";
pub const DEFAULT_TAG: &str = "latest";

/// Stands for a part that a separator promised but that is empty (`/llama3`, `llama3:`), as
/// Ollama's `MissingPart` does: it is not a valid part, so such a name is refused, and it holds
/// no `/` or `:`, so the later cuts go exactly as Ollama's do.
const MISSING: &str = "!missing!";

/// A fully qualified model name, every part lowercased: Ollama compares names without regard to
/// case (`getExistingName` matches each part with `EqualFold`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelName {
    /// `host namespace model tag`, lowercased, in one allocation (a name is parsed on every
    /// request of a key limited to some models); `ends` says where each part ends.
    parts: String,
    ends: [usize; 4],
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Part {
    Host,
    Namespace,
    Model,
    Tag,
}

impl Part {
    fn max_len(self) -> usize {
        match self {
            Part::Host => 350,
            _ => 80,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Part::Host => "host",
            Part::Namespace => "namespace",
            Part::Model => "model",
            Part::Tag => "tag",
        }
    }

    /// Ollama's `isValidPart`: a letter, digit or `_` first; then also `-`, `.` (not in a
    /// namespace) and `:` (only in a host, for a port). ASCII only.
    fn is_valid(self, text: &str, wildcards: bool) -> bool {
        let bytes = text.as_bytes();
        if bytes.is_empty() || bytes.len() > self.max_len() {
            return false;
        }
        bytes.iter().enumerate().all(|(i, &b)| {
            let plain = b.is_ascii_alphanumeric() || b == b'_';
            let inner = match b {
                b'-' => true,
                b'.' => self != Part::Namespace,
                b':' => self == Part::Host,
                _ => false,
            };
            (wildcards && b == b'*') || plain || (i > 0 && inner)
        })
    }
}

/// Where Ollama is told to find a model: the `:cloud` and `:local` suffixes of `modelref`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Source {
    Unspecified,
    Local,
    Cloud,
}

/// Ollama's `parseSourceSuffix`: a last `:`-part that is `cloud` or `local` (any case, white
/// space around it ignored) is a source, not a tag; a last part ending in `-cloud` is a tag with
/// a cloud source (`gpt-oss:20b-cloud` is `gpt-oss:20b` in the cloud).
fn split_source_suffix(raw: &str) -> (Cow<'_, str>, Source) {
    let Some(colon) = raw.rfind(':') else {
        return (Cow::Borrowed(raw), Source::Unspecified);
    };
    let suffix = raw[colon + 1..].trim();
    if suffix.eq_ignore_ascii_case("cloud") {
        return (Cow::Borrowed(&raw[..colon]), Source::Cloud);
    }
    if suffix.eq_ignore_ascii_case("local") {
        return (Cow::Borrowed(&raw[..colon]), Source::Local);
    }
    // The last six bytes are checked as ASCII, so cutting them off stays on a char boundary.
    let ends_cloud = suffix.len() >= 6 && suffix.as_bytes()[suffix.len() - 6..].eq_ignore_ascii_case(b"-cloud");
    if ends_cloud && !suffix.contains('/') {
        let tag = &suffix[..suffix.len() - 6];
        return (Cow::Owned(format!("{}{tag}", &raw[..=colon])), Source::Cloud);
    }
    (Cow::Borrowed(raw), Source::Unspecified)
}

/// Splits off the tag when the last `:` comes after the last `/` (a `:` before it is a port).
fn cut_tag(text: &str) -> Option<(&str, &str)> {
    let colon = text.rfind(':')?;
    if text.rfind('/').is_some_and(|slash| slash > colon) {
        return None;
    }
    Some((&text[..colon], &text[colon + 1..]))
}

/// Ollama's `ParseRef` then `NormalizePullName`: trims white space, refuses two source suffixes,
/// and names a cloud model by the name its pull stores it under (`gpt-oss:20b:cloud` becomes
/// `gpt-oss:20b-cloud`, `gpt-oss:cloud` stays), so every spelling of a cloud model is one name.
fn resolve_source(raw: &str) -> Option<(Cow<'_, str>, Source)> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    let (base, source) = split_source_suffix(raw);
    if source != Source::Unspecified && split_source_suffix(&base).1 != Source::Unspecified {
        return None;
    }
    if source == Source::Cloud {
        let separator = if cut_tag(&base).is_some() { "-" } else { ":" };
        return Some((Cow::Owned(format!("{base}{separator}cloud")), source));
    }
    Some((base, source))
}

fn or_missing(part: &str) -> &str {
    if part.is_empty() {
        MISSING
    } else {
        part
    }
}

/// A name cut into parts as Ollama's `ParseNameBare` does, before defaults are filled in:
/// `None` means absent (a default applies).
struct BareName<'a> {
    host: Option<&'a str>,
    namespace: Option<&'a str>,
    model: &'a str,
    tag: Option<&'a str>,
}

/// Cuts from the right: the tag (see `cut_tag`), then the model at the last `/`, then the
/// namespace at the next; what is left is the host, after any `scheme://`.
fn split_bare(text: &str) -> BareName<'_> {
    let (rest, tag) = match cut_tag(text) {
        Some((before, tag)) => (or_missing(before), Some(or_missing(tag))),
        None => (text, None),
    };
    let Some((rest, model)) = rest.rsplit_once('/') else {
        return BareName { host: None, namespace: None, model: rest, tag };
    };
    let (rest, model) = (or_missing(rest), or_missing(model));
    let Some((rest, namespace)) = rest.rsplit_once('/') else {
        return BareName { host: None, namespace: Some(rest), model, tag };
    };
    let (rest, namespace) = (or_missing(rest), or_missing(namespace));
    // Ollama keeps the scheme for pulling only and fills an empty host (`https:///ns/m`) with
    // the default, as here.
    let host = rest.split_once("://").map_or(rest, |(_scheme, host)| host);
    BareName { host: (!host.is_empty()).then_some(host), namespace: Some(namespace), model, tag }
}

impl ModelName {
    /// Reads a model name as Ollama's handlers do, with the defaults filled in; `None` for a name
    /// Ollama would refuse as invalid.
    ///
    /// One deliberate divergence: `<name>:local` where `<name>` has no tag is refused. The
    /// inference and show handlers read it as `<name>:latest` run locally, but push, copy and
    /// create read `local` as the tag, so the one text names two models. Writing `<name>` or
    /// `<name>:latest` instead means the same and is accepted.
    pub fn parse(text: &str) -> Option<ModelName> {
        let (resolved, source) = resolve_source(text)?;
        if source == Source::Local && cut_tag(&resolved).is_none() {
            return None;
        }
        let bare = split_bare(&resolved);
        let parts = [
            (Part::Host, bare.host.unwrap_or(DEFAULT_HOST)),
            (Part::Namespace, bare.namespace.unwrap_or(DEFAULT_NAMESPACE)),
            (Part::Model, bare.model),
            (Part::Tag, bare.tag.unwrap_or(DEFAULT_TAG)),
        ];
        if !parts.iter().all(|&(kind, text)| kind.is_valid(text, false)) {
            return None;
        }
        let mut joined = String::with_capacity(parts.iter().map(|(_, text)| text.len()).sum());
        let mut ends = [0; 4];
        for (end, (_, text)) in ends.iter_mut().zip(parts) {
            joined.push_str(text);
            *end = joined.len();
        }
        joined.make_ascii_lowercase();
        Some(ModelName { parts: joined, ends })
    }

    fn part(&self, index: usize) -> &str {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.parts[start..self.ends[index]]
    }

    pub fn host(&self) -> &str {
        self.part(0)
    }

    pub fn namespace(&self) -> &str {
        self.part(1)
    }

    pub fn model(&self) -> &str {
        self.part(2)
    }

    pub fn tag(&self) -> &str {
        self.part(3)
    }

    /// The name as a metrics label: Ollama's short form, lowercase, with the default host and
    /// namespace left out and the tag always there (`gemma3:latest`, `myorg/m:1b`,
    /// `hf.co/org/m:q4`). Every spelling of one model is one label.
    pub fn label(&self) -> String {
        match (self.host() == DEFAULT_HOST, self.namespace() == DEFAULT_NAMESPACE) {
            (true, true) => format!("{}:{}", self.model(), self.tag()),
            (true, false) => format!("{}/{}:{}", self.namespace(), self.model(), self.tag()),
            (false, _) => self.to_string(),
        }
    }

    /// A cloud model by its name: tag `cloud` or `*-cloud` (run on ollama.com, billed to the
    /// server's account). A model created with `remote_host` is cloud under any name; only its
    /// name is seen here.
    pub fn is_cloud(&self) -> bool {
        self.tag() == "cloud" || self.tag().ends_with("-cloud")
    }
}

/// The fully qualified form, `registry.ollama.ai/library/llama3:latest`.
impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}:{}", self.host(), self.namespace(), self.model(), self.tag())
    }
}

/// `*` matches any run of characters (none included); everything else matches itself.
/// Both sides are lowercase already.
fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was seen, and how much text it has taken so far.
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            p += 1;
            backtrack = Some((p, t));
        } else if pattern.get(p) == Some(&text[t]) {
            p += 1;
            t += 1;
        } else if let Some((after_star, taken)) = backtrack {
            p = after_star;
            t = taken + 1;
            backtrack = Some((after_star, taken + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// One `models=` item: a name whose parts may hold `*`. Filled in like a name, except that a
/// pattern without a tag admits every tag. (The item `*` alone, every model, is the list's.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelPattern {
    /// As written, for writing the option back.
    text: String,
    host: String,
    namespace: String,
    model: String,
    /// `None`: any tag.
    tag: Option<String>,
}

impl ModelPattern {
    pub fn parse(text: &str) -> Result<ModelPattern, String> {
        let Some((resolved, source)) = resolve_source(text) else {
            return Err("empty, or both :cloud and :local".into());
        };
        if source == Source::Local {
            return Err("a pattern names stored models, :local has no place in it".into());
        }
        let bare = split_bare(&resolved);
        let parts = [
            (Part::Host, bare.host.unwrap_or(DEFAULT_HOST)),
            (Part::Namespace, bare.namespace.unwrap_or(DEFAULT_NAMESPACE)),
            (Part::Model, bare.model),
            (Part::Tag, bare.tag.unwrap_or("*")),
        ];
        if let Some((kind, _)) = parts.iter().find(|&&(kind, text)| !kind.is_valid(text, true)) {
            return Err(format!("not a valid model name pattern (bad {})", kind.label()));
        }
        let [host, namespace, model, tag] = parts.map(|(_, text)| text.to_ascii_lowercase());
        let tag = bare.tag.map(|_| tag);
        Ok(ModelPattern { text: text.to_string(), host, namespace, model, tag })
    }

    /// Whether the name is one this pattern admits. A cloud model (tag `cloud` or `*-cloud`,
    /// run on ollama.com and billed to the server's account) is admitted only by a pattern whose
    /// tag names the cloud itself (`gpt-oss:*-cloud`, `*:cloud`): `gpt-oss` or `gpt-oss:*` admit
    /// the local models only.
    pub fn matches(&self, name: &ModelName) -> bool {
        if name.is_cloud() && !self.tag.as_deref().is_some_and(|tag| tag.contains("cloud")) {
            return false;
        }
        glob_matches(self.host.as_bytes(), name.host().as_bytes())
            && glob_matches(self.namespace.as_bytes(), name.namespace().as_bytes())
            && glob_matches(self.model.as_bytes(), name.model().as_bytes())
            && self.tag.as_ref().is_none_or(|tag| glob_matches(tag.as_bytes(), name.tag().as_bytes()))
    }
}

impl fmt::Display for ModelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The value of `models=`: a comma-separated list; the item `*` stands for every model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelPatterns {
    patterns: Vec<ModelPattern>,
    unrestricted: bool,
}

impl ModelPatterns {
    /// Errors name the item by position, not by its text.
    pub fn parse(list: &str) -> Result<ModelPatterns, String> {
        if list.is_empty() {
            return Err("empty list".into());
        }
        let mut patterns = Vec::new();
        let mut unrestricted = false;
        for (index, item) in list.split(',').enumerate() {
            let position = index + 1;
            if item.is_empty() {
                return Err(format!("item {position} is empty"));
            }
            if item == "*" {
                unrestricted = true;
                continue;
            }
            let pattern = ModelPattern::parse(item).map_err(|reason| format!("item {position}: {reason}"))?;
            patterns.push(pattern);
        }
        Ok(ModelPatterns { patterns, unrestricted })
    }

    /// Every model: the list holds `*`.
    pub fn is_unrestricted(&self) -> bool {
        self.unrestricted
    }

    pub fn allows(&self, name: &ModelName) -> bool {
        self.unrestricted || self.patterns.iter().any(|pattern| pattern.matches(name))
    }
}

/// The list as it can be written back after `models=`.
impl fmt::Display for ModelPatterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut separator = "";
        if self.unrestricted {
            f.write_str("*")?;
            separator = ",";
        }
        for pattern in &self.patterns {
            write!(f, "{separator}{pattern}")?;
            separator = ",";
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(text: &str) -> Option<String> {
        ModelName::parse(text).map(|name| name.to_string())
    }

    fn patterns(list: &str) -> ModelPatterns {
        ModelPatterns::parse(list).unwrap_or_else(|e| panic!("{list}: {e}"))
    }

    #[test]
    fn labels_are_one_per_model_however_it_is_spelled() {
        let label = |text: &str| ModelName::parse(text).map(|name| name.label());
        let padded = format!("gemma3{}", " ".repeat(1000));
        for spelling in ["gemma3", "GEMMA3:latest", "registry.ollama.ai/library/gemma3", " gemma3 ", padded.as_str()] {
            assert_eq!(label(spelling).as_deref(), Some("gemma3:latest"), "{spelling:?}");
        }
        assert_eq!(label("gemma3:1b").as_deref(), Some("gemma3:1b"));
        assert_eq!(label("myorg/m:Q4").as_deref(), Some("myorg/m:q4"));
        assert_eq!(label("hf.co/org/m").as_deref(), Some("hf.co/org/m:latest"));
        assert_eq!(label("gpt-oss:20b:cloud").as_deref(), Some("gpt-oss:20b-cloud"));
        assert_eq!(label("gpt-oss:latest:cloud").as_deref(), Some("gpt-oss:latest-cloud"));
        assert!(ModelName::parse("gpt-oss:latest:cloud").unwrap().is_cloud());
        assert!(!ModelName::parse("gpt-oss:mine").unwrap().is_cloud());
    }
    fn allows(list: &str, name: &str) -> bool {
        let name = ModelName::parse(name).unwrap_or_else(|| panic!("{name} should parse"));
        patterns(list).allows(&name)
    }

    #[test]
    fn defaults_are_filled_in() {
        let expected = Some("registry.ollama.ai/library/gemma3:latest".to_string());
        for text in [
            "gemma3",
            "gemma3:latest",
            "library/gemma3",
            "registry.ollama.ai/library/gemma3:latest",
            "GEMMA3:Latest",
            "Registry.Ollama.AI/Library/Gemma3",
            "https://registry.ollama.ai/library/gemma3",
            "http://registry.ollama.ai/library/gemma3:latest",
            "  gemma3\t",
        ] {
            assert_eq!(full(text), expected, "{text:?}");
        }
    }

    #[test]
    fn parts_are_split_as_ollama_splits_them() {
        let name = ModelName::parse("hf.co/User/Repo-GGUF:Q4_K_M").unwrap();
        assert_eq!((name.host(), name.namespace(), name.model(), name.tag()), ("hf.co", "user", "repo-gguf", "q4_k_m"));
        assert_eq!(full("localhost:5000/ns/m:t").as_deref(), Some("localhost:5000/ns/m:t"));
        assert_eq!(full("localhost:5000/ns/m").as_deref(), Some("localhost:5000/ns/m:latest"));
        assert_eq!(full("myorg/m").as_deref(), Some("registry.ollama.ai/myorg/m:latest"));
        assert_eq!(full("llama3.2:1b").as_deref(), Some("registry.ollama.ai/library/llama3.2:1b"));
        assert_eq!(full("_x:_y").as_deref(), Some("registry.ollama.ai/library/_x:_y"));
        // The scheme is dropped; an empty host after it takes the default, as in Ollama.
        assert_eq!(full("https:///ns/m").as_deref(), Some("registry.ollama.ai/ns/m:latest"));
        assert_eq!(full("anything://h/ns/m").as_deref(), Some("h/ns/m:latest"));
    }

    #[test]
    fn names_ollama_refuses_are_refused() {
        for text in [
            "",
            "   ",
            ":",
            "m:",
            ":t",
            "/m",
            "ns/",
            "/ns/m",
            "h//m",
            "a/b/c/d",
            "-m",
            ".m",
            "m:-t",
            "m:t/x",
            "ns.x/m",
            "ns:x/m:t",
            "host:5000/m", // the port leaves a `:` in what is then the namespace
            "m@sha256:abc",
            "m:t@sha256:abc",
            "m t",
            "m/",
            "mödel",
            "m\0",
            "a://b://c/ns/m",
            "https://ns/m",
            "m:a:b",
            "*",
            "qwen*",
        ] {
            assert_eq!(full(text), None, "{text:?}");
        }
    }

    #[test]
    fn part_lengths_follow_ollama() {
        let model80 = "m".repeat(80);
        assert!(ModelName::parse(&model80).is_some());
        assert!(ModelName::parse(&"m".repeat(81)).is_none());
        assert!(ModelName::parse(&format!("m:{}", "t".repeat(81))).is_none());
        assert!(ModelName::parse(&format!("{}/m", "n".repeat(81))).is_none());
        let host350 = "h".repeat(350);
        assert!(ModelName::parse(&format!("{host350}/n/m")).is_some());
        assert!(ModelName::parse(&format!("h{host350}/n/m")).is_none());
    }

    #[test]
    fn source_suffixes_follow_ollama() {
        // A cloud model has the name its pull stores it under, however it is spelled.
        assert_eq!(full("gpt-oss:20b:cloud").as_deref(), Some("registry.ollama.ai/library/gpt-oss:20b-cloud"));
        assert_eq!(full("gpt-oss:20b-cloud").as_deref(), Some("registry.ollama.ai/library/gpt-oss:20b-cloud"));
        assert_eq!(full("gpt-oss:20B-Cloud").as_deref(), Some("registry.ollama.ai/library/gpt-oss:20b-cloud"));
        assert_eq!(full("gpt-oss: 20b-cloud").as_deref(), Some("registry.ollama.ai/library/gpt-oss:20b-cloud"));
        assert_eq!(full("gpt-oss:cloud").as_deref(), Some("registry.ollama.ai/library/gpt-oss:cloud"));
        assert_eq!(full("gpt-oss:CLOUD").as_deref(), Some("registry.ollama.ai/library/gpt-oss:cloud"));
        assert_eq!(full("localhost:5000/ns/m:cloud").as_deref(), Some("localhost:5000/ns/m:cloud"));
        // `:local` after a tag only says where to run it.
        assert_eq!(full("llama3:8b:local").as_deref(), Some("registry.ollama.ai/library/llama3:8b"));
        // Two sources, or a bare `-cloud` tag, are refused by Ollama too.
        let refused =
            ["m:cloud:local", "m:1b:cloud:cloud", "m:cloud-cloud", "m:local-cloud", "m:-cloud", "m:1b-cloud:local"];
        for text in refused.into_iter().chain([":cloud"]) {
            assert_eq!(full(text), None, "{text:?}");
        }
    }

    #[test]
    fn an_untagged_local_suffix_is_refused_because_ollama_reads_it_two_ways() {
        assert_eq!(full("llama3:local"), None);
        assert_eq!(full("llama3:LOCAL"), None);
        assert_eq!(full("localhost:5000/ns/m:local"), None);
        assert!(full("llama3:locally").is_some(), "only the exact suffix is a source");
    }

    #[test]
    fn pattern_examples_from_the_issue() {
        assert!(allows("gemma3", "gemma3"));
        assert!(allows("gemma3", "registry.ollama.ai/library/gemma3:latest"));
        assert!(allows("gemma3", "gemma3:27b"), "a tagless pattern admits every tag");
        assert!(allows("gemma3:latest", "gemma3"));
        assert!(!allows("gemma3:latest", "gemma3:27b"));
        assert!(allows("llama3.2", "llama3.2:1b"));
        assert!(allows("qwen*", "qwen2.5:7b"));
        assert!(allows("qwen*", "qwen3"));
        assert!(!allows("qwen*", "myorg/qwen3"), "no namespace: library models only");
        assert!(allows("llama3.2:*b", "llama3.2:1b"));
        assert!(allows("llama3.2:*b", "llama3.2:3b"));
        assert!(!allows("llama3.2:*b", "llama3.2"), "latest does not end in b");
        assert!(!allows("llama3.2:*b", "llama3.2:1b-instruct-q4_K_M"));
        assert!(allows("myorg/*", "myorg/anything:v2"));
        assert!(!allows("myorg/*", "llama3"));
        assert!(!allows("myorg/*", "hf.co/myorg/x"));
        assert!(allows("hf.co/*/*", "hf.co/bartowski/Llama-3.2-1B-GGUF:Q4_K_M"));
        assert!(!allows("hf.co/*/*", "llama3"));
        assert!(!allows("hf.co/*/*", "huggingface.co/a/b"));
    }

    #[test]
    fn patterns_ignore_case_and_fill_defaults() {
        assert!(allows("Gemma3:Latest", "GEMMA3"));
        assert!(allows("registry.ollama.ai/library/gemma3", "gemma3:1b"));
        assert!(allows("https://registry.ollama.ai/library/gemma3", "gemma3:1b"));
        assert!(allows("QWEN*", "qwen2.5"));
        assert!(allows("hf.co/Bartowski/*", "HF.CO/bartowski/x:y"));
        assert!(allows("localhost:5000/ns/*", "localhost:5000/ns/m:t"));
        assert!(!allows("localhost/ns/*", "localhost:5000/ns/m:t"));
        assert!(allows("localhost*/ns/*", "localhost:5000/ns/m:t"), "the port is part of the host");
    }

    #[test]
    fn a_star_stays_within_its_part() {
        assert!(!allows("l*", "myorg/llama3"));
        assert!(allows("*:*", "llama3:8b"));
        assert!(!allows("*:*", "myorg/llama3:8b"), "`*:*` is every library model");
        assert!(allows("*/*", "myorg/llama3:8b"));
        assert!(!allows("*/*", "hf.co/a/b"));
        assert!(allows("*/*/*", "hf.co/a/b"));
        assert!(allows("*/*/*", "llama3"));
        assert!(allows("l*a*3", "llama3"));
        assert!(allows("*3", "llama3"));
        assert!(!allows("*3", "llama3x"));
        assert!(!allows("llama3:*", "llama3:70b-cloud"), "a cloud tag needs a pattern naming the cloud");
    }

    #[test]
    fn the_star_item_is_every_model() {
        let every = patterns("*");
        assert!(every.is_unrestricted());
        for name in ["llama3", "hf.co/a/b:c", "localhost:5000/ns/m:t", "myorg/x"] {
            assert!(every.allows(&ModelName::parse(name).unwrap()));
        }
        assert!(patterns("llama3,*").is_unrestricted());
        assert!(!patterns("llama3,qwen*").is_unrestricted());
        assert!(!patterns("*:*").is_unrestricted());
    }

    #[test]
    fn cloud_patterns_name_cloud_models() {
        assert!(allows("gpt-oss:20b-cloud", "gpt-oss:20b:cloud"));
        assert!(allows("gpt-oss:20b:cloud", "gpt-oss:20b-cloud"));
        assert!(!allows("gpt-oss:20b", "gpt-oss:20b:cloud"), "the local model does not admit the cloud one");
        assert!(allows("gpt-oss:cloud", "gpt-oss:cloud"));
        assert!(!allows("gpt-oss:latest", "gpt-oss:cloud"));
        // One cloud model to Ollama (`x:latest` on ollama.com), local to no pattern.
        for pattern in ["gpt-oss", "gpt-oss:latest", "gpt-oss:*", "*"] {
            assert!(!allows(pattern, "gpt-oss:latest:cloud") || pattern == "*", "{pattern}");
            assert!(!allows(pattern, "gpt-oss:cloud") || pattern == "*", "{pattern}");
        }
        assert!(allows("*:*-cloud", "gpt-oss:120b:cloud"));
        assert!(!allows("*:*-cloud", "gpt-oss:120b"));
        assert!(ModelPattern::parse("llama3:local").is_err());
        assert!(ModelPattern::parse("llama3:8b:local").is_err());
    }

    #[test]
    fn multiple_patterns_admit_any_match() {
        let list = patterns("llama3.2:1b,qwen*,myorg/*");
        let admitted = |name: &str| list.allows(&ModelName::parse(name).unwrap());
        assert!(admitted("llama3.2:1b"));
        assert!(!admitted("llama3.2:3b"));
        assert!(admitted("qwen3:0.6b"));
        assert!(admitted("myorg/private"));
        assert!(!admitted("gemma3"));
    }

    #[test]
    fn bad_patterns_are_errors_that_do_not_echo_the_text() {
        for list in [
            "",
            ",",
            "llama3,",
            ",llama3",
            "a,,b",
            "a b",
            "ns.x/*",
            "-x",
            "m:",
            "/m",
            "a/b/c/d",
            "m@sha256:x",
            "x:cloud:local",
            "sk-secret-1234:local",
        ] {
            let error = ModelPatterns::parse(list).expect_err(list);
            assert!(!error.contains("secret") && !error.contains("ns.x"), "{list}: {error}");
        }
        let error = ModelPatterns::parse("llama3,ns.x/*").unwrap_err();
        assert_eq!(error, "item 2: not a valid model name pattern (bad namespace)");
        assert_eq!(ModelPatterns::parse("a,,b").unwrap_err(), "item 2 is empty");
    }

    #[test]
    fn patterns_are_written_back_as_given() {
        for list in ["*", "llama3", "Qwen*,myorg/*", "*,hf.co/*/*", "gpt-oss:20b:cloud"] {
            let parsed = patterns(list);
            assert_eq!(parsed.to_string(), list);
            assert_eq!(patterns(&parsed.to_string()), parsed);
        }
    }

    #[test]
    fn glob_edge_cases() {
        assert!(glob_matches(b"*", b""));
        assert!(glob_matches(b"", b""));
        assert!(!glob_matches(b"", b"a"));
        assert!(glob_matches(b"a*b*c", b"aXXbYYbZc"));
        assert!(!glob_matches(b"a*b*c", b"aXXbYYbZ"));
        assert!(glob_matches(b"**a**", b"bab"));
        assert!(!glob_matches(b"abc", b"ab"));
        assert!(!glob_matches(b"ab", b"abc"));
        let long = vec![b'a'; 350];
        assert!(!glob_matches(b"*a*a*a*a*a*a*a*a*b", &long));
    }

    #[test]
    fn arbitrary_text_never_panics() {
        let alphabet = ["a", "/", ":", "*", "-", ".", "@", "é", " ", "cloud", "local", "://", "-cloud", "_", "9"];
        let mut seed = 0x2545_f491u32;
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..(seed % 12) {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                text.push_str(alphabet[(seed >> 16) as usize % alphabet.len()]);
            }
            let name = ModelName::parse(&text);
            if let Some(name) = &name {
                // A name that parses reads back as itself.
                assert_eq!(ModelName::parse(&name.to_string()).as_ref(), Some(name), "{text:?}");
            }
            if let (Ok(list), Some(name)) = (ModelPatterns::parse(&text), &name) {
                let _ = list.allows(name);
            }
        }
    }

    #[test]
    fn cloud_models_need_a_pattern_that_names_the_cloud() {
        let name = |text: &str| ModelName::parse(text).unwrap();
        let patterns = |text: &str| ModelPatterns::parse(text).unwrap();
        for local_only in ["gpt-oss", "gpt-oss:*", "gpt*", "*/*"] {
            assert!(patterns(local_only).allows(&name("gpt-oss:20b")), "{local_only}");
            for cloud in ["gpt-oss:20b-cloud", "gpt-oss:cloud", "gpt-oss:20b:cloud"] {
                assert!(!patterns(local_only).allows(&name(cloud)), "{local_only} {cloud}");
            }
        }
        assert!(patterns("gpt-oss:*-cloud").allows(&name("gpt-oss:20b-cloud")));
        assert!(patterns("gpt-oss:*-cloud").allows(&name("gpt-oss:120b:cloud")));
        assert!(patterns("*:cloud").allows(&name("qwen3-coder:cloud")));
        assert!(patterns("*").allows(&name("gpt-oss:20b-cloud")), "models=* is every model");
    }
}
