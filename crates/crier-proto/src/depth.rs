//! A bound on JSON nesting. Payloads (`data`, `info`) are relayed as raw
//! JSON, never parsed into a tree here, so nothing in crier recurses over
//! them; but every subscriber's SDK does. Data nested 20,000 levels deep
//! made centrifuge-python's subscriber fail with a recursion error, so a
//! command or an API body nested deeper than [`MAX_DEPTH`] is refused
//! before it reaches anyone (client: disconnect 3501; API: HTTP 400).

/// Deepest nesting of arrays and objects accepted anywhere in a command or
/// an API body (serde_json's own recursion limit for a `Value`).
pub const MAX_DEPTH: usize = 128;

/// The reason given for a refused document.
pub(crate) const TOO_DEEP: &str = "JSON nested deeper than 128 levels";

/// Whether `json` nests arrays and objects at most `max` deep. One pass,
/// no allocation; strings (with their escapes) are skipped, so brackets in
/// them do not count. Syntax is not checked here: the parser does that.
pub fn within(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(n: usize) -> String {
        format!("{}{}", "[".repeat(n), "]".repeat(n))
    }

    #[test]
    fn counts_arrays_and_objects_but_not_brackets_in_strings() {
        assert!(within(nested(128).as_bytes(), 128));
        assert!(!within(nested(129).as_bytes(), 128));
        assert!(!within(nested(20_000).as_bytes(), 128));
        let inside = format!(r#"{{"a":"{}","b":"\"[[[\\"}}"#, "[".repeat(500));
        assert!(within(inside.as_bytes(), 1));
        assert!(within(br#"{"a":{"b":[1,{"c":2}]}}"#, 4));
        assert!(!within(br#"{"a":{"b":[1,{"c":2}]}}"#, 3));
    }

    #[test]
    fn commands_and_api_bodies_nested_too_deep_are_refused() {
        let deep = format!(
            r#"{{"id":1,"publish":{{"channel":"c","data":{}}}}}"#,
            nested(20_000)
        );
        let err = crate::client::parse_command(deep.as_bytes()).expect_err("too deep");
        assert_eq!(err.disconnect().map(|d| d.code), Some(3501));
        let ok = format!(r#"{{"id":1,"publish":{{"channel":"c","data":{}}}}}"#, nested(100));
        assert!(crate::client::parse_command(ok.as_bytes()).is_ok());
        let body = format!(r#"{{"channel":"c","data":{}}}"#, nested(20_000));
        let err =
            crate::api::Request::parse(crate::api::Method::Publish, body.as_bytes()).expect_err("too deep");
        assert!(err.to_string().contains("deeper than 128"), "{err}");
    }

    #[test]
    fn closing_a_level_makes_room_for_its_siblings() {
        // 300 arrays side by side are 2 levels deep, not 301.
        let siblings = format!("[{}[]]", "[],".repeat(300));
        assert!(within(siblings.as_bytes(), 2));
        assert!(!within(siblings.as_bytes(), 1));
        let objects = format!("[{}{{}}]", "{},".repeat(300));
        assert!(within(objects.as_bytes(), 2));
    }
}
