//! A message for the operator with its hint kept apart as data: what went wrong, and what to do
//! about it. A leaf: the journal, the transports and the engine all build them.

/// What went wrong and, kept apart, what the operator can do about it. Shown as the message,
/// then `  hint: …` on a line of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub text: String,
    pub hint: Option<String>,
}

impl Message {
    pub fn new(text: impl Into<String>) -> Self {
        Message {
            text: text.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Message::new(text)
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Message::new(text)
    }
}

impl Message {
    /// A message that crossed a process boundary as text (the file agent over SSH, an
    /// `io::Error`): its hint is the part after the `  hint:` line, if it has one.
    pub fn from_rendered(text: &str) -> Self {
        match text.split_once("\n  hint: ") {
            Some((text, hint)) => Message::new(text).hint(hint),
            None => Message::new(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_message_gives_its_hint_back() {
        let message = Message::new("a: refused").hint("remove the link");
        assert_eq!(Message::from_rendered(&message.to_string()), message);
        assert_eq!(Message::from_rendered("plain"), Message::new("plain"));
    }
}
