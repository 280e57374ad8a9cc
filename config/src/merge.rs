//! Deep merge of YAML trees: maps merge key by key, everything else (lists,
//! scalars) is replaced by the override. Lists replace rather than append so an
//! environment can shrink a list (fewer symbols in `dev`) without tricks.

use serde_norway::Value;

/// Merges `overlay` into `base` in place.
pub fn deep_merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Mapping(base_map), Value::Mapping(over_map)) => {
            for (k, v) in over_map {
                match base_map.get_mut(&k) {
                    Some(existing) => deep_merge(existing, v),
                    None => {
                        base_map.insert(k, v);
                    }
                }
            }
        }
        (slot, overlay) => *slot = overlay,
    }
}

/// Whether `path` (dotted keys, `[i]` indices) exists in `tree`; used to say
/// which file a key came from.
pub fn has_path(tree: &Value, path: &str) -> bool {
    let mut node = tree;
    for seg in split_path(path) {
        let next = match seg {
            Segment::Key(k) => node.as_mapping().and_then(|m| m.get(Value::String(k.to_owned()))),
            Segment::Index(i) => node.as_sequence().and_then(|s| s.get(i)),
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    true
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_path(path: &str) -> impl Iterator<Item = Segment<'_>> {
    path.split('.').filter(|s| !s.is_empty()).flat_map(|part| {
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        let key = (!key.is_empty()).then_some(Segment::Key(key));
        let indices = rest
            .split(['[', ']'])
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok().map(Segment::Index));
        key.into_iter().chain(indices)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_norway::from_str(s).unwrap()
    }

    #[test]
    fn maps_merge_and_lists_replace() {
        let mut base = yaml("a: {x: 1, y: [1, 2, 3]}\nb: 2");
        deep_merge(&mut base, yaml("a: {y: [9]}\nc: 3"));
        assert_eq!(base, yaml("a: {x: 1, y: [9]}\nb: 2\nc: 3"));
    }

    #[test]
    fn scalar_override_replaces_map() {
        let mut base = yaml("a: {x: 1}");
        deep_merge(&mut base, yaml("a: 5"));
        assert_eq!(base, yaml("a: 5"));
    }

    #[test]
    fn finds_nested_paths_with_indices() {
        let tree = yaml("s: [{id: 1, sym: [{a: 1}]}]");
        assert!(has_path(&tree, "s[0].sym[0].a"));
        assert!(!has_path(&tree, "s[1]"));
        assert!(!has_path(&tree, "s[0].nope"));
    }
}
