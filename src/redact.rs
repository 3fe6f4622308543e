//! Cookies out of everything distls shows: a flags file's text (the dry run's diffs) holds
//! `-setcookie <cookie>` for relx, `RELEASE_COOKIE=<cookie>` for an Elixir release, and any text
//! may hold a node's cookie elsewhere.

use crate::argsfile::Cookie;

/// What a cookie is replaced with.
pub const MASK: &str = "<redacted>";

/// Known cookies shorter than this are masked only as flag values (`-setcookie X`): masking every
/// occurrence of a two-letter string would garble paths and words around it.
const MIN_MASKED_ANYWHERE: usize = 4;

/// `text` with the value after every `-setcookie` masked, then every occurrence of a known cookie.
pub fn redact(text: &str, cookies: &[&Cookie]) -> String {
    let mut out = mask_release_cookie_values(&mask_setcookie_values(text));
    for cookie in cookies {
        let secret = cookie.expose();
        // `replace` copies the text even when the cookie is not in it.
        if secret.len() >= MIN_MASKED_ANYWHERE && out.contains(secret) {
            out = out.replace(secret, MASK);
        }
    }
    out
}

/// `RELEASE_COOKIE=VALUE` (an Elixir release's env.sh) → `RELEASE_COOKIE=<redacted>`: the value
/// to the end of its line, however short.
fn mask_release_cookie_values(text: &str) -> String {
    const ASSIGN: &str = "RELEASE_COOKIE=";
    text.split_inclusive('\n')
        .map(|line| match line.find(ASSIGN) {
            Some(at) => {
                let value_start = at + ASSIGN.len();
                let body_end = line.trim_end_matches(['\n', '\r']).len();
                if value_start >= body_end {
                    return line.to_owned();
                }
                format!("{}{MASK}{}", &line[..value_start], &line[body_end..])
            }
            None => line.to_owned(),
        })
        .collect()
}

/// `-setcookie VALUE` → `-setcookie <redacted>`, whatever the spacing; a quoted value to its
/// closing quote.
fn mask_setcookie_values(text: &str) -> String {
    const FLAG: &str = "-setcookie";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(FLAG) {
        let after_flag = at + FLAG.len();
        out.push_str(&rest[..after_flag]);
        rest = &rest[after_flag..];
        // Only the flag itself, not e.g. `-setcookies`.
        let spaces = rest.len() - rest.trim_start_matches([' ', '\t']).len();
        if spaces == 0 {
            continue;
        }
        out.push_str(&rest[..spaces]);
        rest = &rest[spaces..];
        let end = match rest.chars().next() {
            Some(quote @ ('"' | '\'')) => rest[1..]
                .find(quote)
                .map_or(rest.find(['\n', '\r']).unwrap_or(rest.len()), |i| i + 2),
            Some(_) => rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len()),
            None => 0,
        };
        if end > 0 {
            out.push_str(MASK);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_the_value_after_setcookie_whatever_the_spacing() {
        let text = " -sname a\n -setcookie s3cret\n-setcookie\t'two words'\n-setcookie \"q\" x\n";
        let out = redact(text, &[]);
        assert_eq!(
            out,
            " -sname a\n -setcookie <redacted>\n-setcookie\t<redacted>\n-setcookie <redacted> x\n"
        );
        assert_eq!(redact("-setcookies x", &[]), "-setcookies x");
        assert_eq!(redact("-setcookie", &[]), "-setcookie");
        assert_eq!(redact("a -setcookie \n", &[]), "a -setcookie \n");
    }

    #[test]
    fn masks_release_cookie_assignments_however_short() {
        let text = "export RELEASE_NODE=a\nexport RELEASE_COOKIE=ab\r\nRELEASE_COOKIE=\"x y\"\nRELEASE_COOKIE=";
        assert_eq!(
            redact(text, &[]),
            "export RELEASE_NODE=a\nexport RELEASE_COOKIE=<redacted>\r\nRELEASE_COOKIE=<redacted>\nRELEASE_COOKIE="
        );
    }

    #[test]
    fn masks_a_known_cookie_anywhere() {
        let cookie = Cookie::new("Sup3rSecret");
        let short = Cookie::new("c");
        let out = redact(
            "ERL_OPTIONS=\"-x Sup3rSecret\" # Sup3rSecret\ncat",
            &[&cookie, &short],
        );
        assert_eq!(out, "ERL_OPTIONS=\"-x <redacted>\" # <redacted>\ncat");
    }
}
