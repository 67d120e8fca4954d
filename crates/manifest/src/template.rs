//! `{{ name }}` templates, as component `variables` and
//! `allowed_outbound_hosts` use them: literal text with references to
//! variables, spaces inside the braces optional.

use crate::validate::id_problem;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// One piece of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text taken as it is.
    Literal(String),
    /// `{{ name }}`: the value of the variable `name`.
    Variable(String),
}

impl Template {
    /// Parse `text`. Fails on an unclosed `{{` or a reference that is not
    /// a valid variable name, saying which.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(format!("unclosed `{{{{` in `{text}`"));
            };
            let name = after[..close].trim();
            if let Some(problem) = id_problem(name, '_', true) {
                return Err(format!(
                    "`{{{{ {name} }}}}` in `{text}` is not a variable reference: {problem}"
                ));
            }
            parts.push(Part::Variable(name.to_string()));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Self { parts })
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The names of the variables referred to, in order.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Variable(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_references() {
        let template = Template::parse("https://{{host}}:{{ port }}/x").unwrap();
        assert_eq!(
            template.parts(),
            [
                Part::Literal("https://".into()),
                Part::Variable("host".into()),
                Part::Literal(":".into()),
                Part::Variable("port".into()),
                Part::Literal("/x".into()),
            ]
        );
        assert_eq!(Template::parse("plain").unwrap().references().count(), 0);
        assert!(Template::parse("{{ open").unwrap_err().contains("unclosed"));
        assert!(
            Template::parse("{{ Bad-Name }}").unwrap_err().contains("not a variable reference")
        );
        assert!(Template::parse("{{}}").unwrap_err().contains("not a variable reference"));
    }
}
