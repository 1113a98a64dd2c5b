//! Topic templates: `%i` stands for the client index (as in emqtt-bench).

/// Expands every `%i` in `template` to `index`; `%%` is a literal `%`.
pub fn expand(template: &str, index: u32) -> String {
    let mut out = String::with_capacity(template.len() + 8);
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.peek() {
                Some('i') => {
                    chars.next();
                    out.push_str(&index.to_string());
                    continue;
                }
                Some('%') => {
                    chars.next();
                    out.push('%');
                    continue;
                }
                _ => {}
            }
        }
        out.push(c);
    }
    out
}

/// The filter that matches every expansion of `template`: each level containing `%i` becomes
/// `+`. A template without `%i` is its own filter.
pub fn wildcard_filter(template: &str) -> String {
    template
        .split('/')
        .map(|level| {
            if level.contains("%i") {
                "+".to_string()
            } else {
                expand(level, 0)
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `$share/{group}/{filter}`.
pub fn shared_filter(group: &str, filter: &str) -> String {
    format!("$share/{group}/{filter}")
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn expands_every_index_marker() {
        assert_eq!(expand("bench/%i", 7), "bench/7");
        assert_eq!(expand("a/%i/b/%i", 12), "a/12/b/12");
        assert_eq!(expand("dev%i", 3), "dev3");
    }

    #[test]
    fn leaves_other_text_alone() {
        assert_eq!(expand("plain/topic", 9), "plain/topic");
        assert_eq!(expand("100%", 1), "100%");
        assert_eq!(expand("%x/%", 1), "%x/%");
        assert_eq!(expand("lit/%%i", 5), "lit/%i");
        assert_eq!(expand("", 5), "");
    }

    #[test]
    fn wildcard_replaces_index_levels() {
        assert_eq!(wildcard_filter("bench/fanin/%i"), "bench/fanin/+");
        assert_eq!(wildcard_filter("a/dev%i/b"), "a/+/b");
        assert_eq!(wildcard_filter("a/b"), "a/b");
    }

    #[test]
    fn shared_group_prefix() {
        assert_eq!(shared_filter("g", "a/+"), "$share/g/a/+");
    }
}
