//! Ollama's model listings (`/api/tags`, `/api/ps`, `/v1/models`) cut down to what an entry
//! may see: elements dropped from one array, every other byte as Ollama wrote it.

use std::borrow::Cow;
use std::ops::Range;

use crate::json::{go_name_matches, string_value, validate, JsonError, Member, Scanner, ValueKind};

/// One element of a listing's array, as shown to [`filter_listing`]'s `keep`.
pub struct Entry<'a> {
    body: &'a [u8],
    value: Range<usize>,
    members: Vec<Member<'a>>,
}

impl<'a> Entry<'a> {
    /// The element's own string member named exactly `name` (the last one, if repeated, as a
    /// Go or Python client would read it); `None` if absent, not a string, or the element is
    /// not an object.
    pub fn string(&self, name: &str) -> Option<Cow<'a, str>> {
        let member = self.members.iter().rev().find(|member| member.name == name)?;
        string_value(self.body, member)
    }

    /// Every string value of the element's members that Go would store in the field tagged
    /// `field` (matched as [`go_name_matches`] does), duplicates included, in body order.
    pub fn go_strings(&self, field: &'static str) -> impl Iterator<Item = Cow<'a, str>> + '_ {
        let body = self.body;
        self.members
            .iter()
            .filter(move |member| go_name_matches(&member.name, field))
            .filter_map(move |member| string_value(body, member))
    }

    /// The element's JSON text.
    pub fn raw(&self) -> &'a [u8] {
        &self.body[self.value.clone()]
    }
}

/// Removes the elements `keep` refuses from the array in the top-level member named exactly
/// `array_member` (`models` in /api/tags and /api/ps, `data` in /v1/models). Everything else
/// stays byte for byte, so the answer is still the JSON Ollama wrote; an array left empty
/// becomes `[]`. Without such an array (absent, null, another kind) the body comes back as it
/// was, borrowed, as it does when every element is kept. One pass: `keep` may be called for
/// elements of a body that then turns out malformed, whose error is returned.
pub fn filter_listing<'a>(
    body: &'a [u8],
    array_member: &str,
    mut keep: impl FnMut(&Entry<'a>) -> bool,
) -> Result<Cow<'a, [u8]>, JsonError> {
    let mut scanner = Scanner::new(body);
    scanner.skip_white_space();
    if scanner.peek() != Some(b'{') {
        validate(body)?;
        return Err(JsonError::NotAnObject);
    }
    let mut arrays = Vec::new();
    scanner.object_members(|scanner, name| {
        if name == array_member && scanner.peek() == Some(b'[') {
            arrays.push(listing_array(scanner, &mut keep)?);
        } else {
            scanner.value()?;
        }
        Ok(())
    })?;
    scanner.finish()?;

    let mut filtered: Option<Vec<u8>> = None;
    let mut copied_up_to = 0;
    for ListingArray { brackets, elements } in arrays {
        if elements.iter().all(|element| element.kept) {
            continue;
        }
        let out = filtered.get_or_insert_with(|| Vec::with_capacity(body.len()));
        out.extend_from_slice(&body[copied_up_to..brackets.start + 1]);
        let mut any_kept = false;
        for (index, element) in elements.iter().enumerate().filter(|(_, element)| element.kept) {
            let before = if any_kept {
                // The separator that stood before this element: white space, a comma, white space.
                elements[index - 1].value.end..element.value.start
            } else {
                // The white space between `[` and the first element.
                brackets.start + 1..elements[0].value.start
            };
            out.extend_from_slice(&body[before]);
            out.extend_from_slice(&body[element.value.clone()]);
            any_kept = true;
        }
        if any_kept {
            // The white space between the last element and `]`.
            let last = elements.last().expect("a kept element");
            out.extend_from_slice(&body[last.value.end..brackets.end - 1]);
        }
        copied_up_to = brackets.end - 1;
    }
    Ok(match filtered {
        Some(mut out) => {
            out.extend_from_slice(&body[copied_up_to..]);
            Cow::Owned(out)
        }
        None => Cow::Borrowed(body),
    })
}

/// A listing's array as scanned: where its brackets are, and each element with `keep`'s verdict.
struct ListingArray {
    brackets: Range<usize>,
    elements: Vec<ListedElement>,
}

struct ListedElement {
    value: Range<usize>,
    kept: bool,
}

/// Scans the array at the scanner's place, showing each element to `keep` as it goes.
fn listing_array<'a>(
    scanner: &mut Scanner<'a>,
    keep: &mut impl FnMut(&Entry<'a>) -> bool,
) -> Result<ListingArray, JsonError> {
    let mut elements = Vec::new();
    // One member list, reused from element to element.
    let mut members = Vec::new();
    let brackets = scanner.array_elements(|scanner| {
        let value_start = scanner.pos();
        if scanner.peek() == Some(b'{') {
            scanner.collect_members(|member| members.push(member))?;
        } else {
            scanner.value()?;
        }
        let entry =
            Entry { body: scanner.body(), value: value_start..scanner.pos(), members: std::mem::take(&mut members) };
        let kept = keep(&entry);
        elements.push(ListedElement { value: entry.value, kept });
        members = entry.members;
        members.clear();
        Ok(())
    })?;
    Ok(ListingArray { brackets, elements })
}

/// [`filter_listing`] against the validator, for any body: keeping everything changes nothing,
/// and what is cut down is still a JSON object. Panics on any disagreement. For the fuzz target
/// (`fuzz/targets/json_body.rs`) and the unit tests, beside `json::check_consistency`.
pub fn check_consistency(body: &[u8]) {
    let whole = validate(body);
    for array in ["models", "data", "x"] {
        let all = filter_listing(body, array, |_| true);
        match &all {
            Ok(kept) => assert_eq!(kept.as_ref(), body, "keeping everything changes nothing"),
            Err(_) => assert!(whole != Ok(ValueKind::Object)),
        }
        let mut toggle = false;
        let some = filter_listing(body, array, |entry| {
            let _ = (entry.string("name"), entry.string("id"), entry.raw());
            toggle = !toggle;
            toggle
        });
        let none = filter_listing(body, array, |_| false);
        for filtered in [some, none] {
            match filtered {
                Ok(filtered) => assert_eq!(validate(&filtered), Ok(ValueKind::Object), "still a JSON object"),
                Err(error) => assert_eq!(Err::<(), _>(error), all.clone().map(|_| ())),
            }
        }
    }
}
