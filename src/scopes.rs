//! A key's scopes (`scopes=`): what kinds of endpoint it may reach.

use std::fmt;
use std::ops::BitOr;

/// A key's scopes: a small set of `read`, `infer`, `manage`, `search` (web searches Ollama runs
/// on ollama.com, billed to the server's account), and `all`, which holds them all and also
/// every endpoint not listed here.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    /// No scope at all.
    pub const NONE: Scopes = Scopes(0);
    pub const READ: Scopes = Scopes(1);
    pub const INFER: Scopes = Scopes(2);
    pub const MANAGE: Scopes = Scopes(4);
    pub const SEARCH: Scopes = Scopes(16);
    /// Every scope, plus the bit that only `all` carries: endpoints not listed here.
    pub const ALL: Scopes = Scopes(1 | 2 | 4 | 8 | 16);

    /// Both sets together, usable in constants.
    pub const fn union(self, other: Scopes) -> Scopes {
        Scopes(self.0 | other.0)
    }

    /// In the order they are written back; `all` first, so it is the name a full set gets.
    pub const NAMES: [(Scopes, &'static str); 5] = [
        (Scopes::ALL, "all"),
        (Scopes::READ, "read"),
        (Scopes::INFER, "infer"),
        (Scopes::MANAGE, "manage"),
        (Scopes::SEARCH, "search"),
    ];

    /// A comma-separated list of scope names. Errors name the item by position, not its text.
    pub fn parse(list: &str) -> Result<Scopes, String> {
        if list.is_empty() {
            return Err("empty list".into());
        }
        let mut scopes = Scopes(0);
        for (index, item) in list.split(',').enumerate() {
            let position = index + 1;
            if item.is_empty() {
                return Err(format!("item {position} is empty"));
            }
            let Some(&(scope, _)) = Scopes::NAMES.iter().find(|(_, name)| *name == item) else {
                return Err(format!("item {position} is not one of read, infer, manage, search, all"));
            };
            scopes = scopes | scope;
        }
        Ok(scopes)
    }

    /// Whether every scope in `other` is in `self`.
    pub fn contains(self, other: Scopes) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Scopes {
    type Output = Scopes;

    fn bitor(self, other: Scopes) -> Scopes {
        Scopes(self.0 | other.0)
    }
}

/// The names, comma-separated, as `scopes=` takes them: `all`, `read,infer`.
impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("none");
        }
        let mut left = *self;
        let mut separator = "";
        for (scope, name) in Scopes::NAMES {
            if left.contains(scope) {
                write!(f, "{separator}{name}")?;
                separator = ",";
                left = Scopes(left.0 & !scope.0);
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({self})")
    }
}
