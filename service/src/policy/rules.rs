//! The rule language: a small subset of oslo.policy's.
//!
//! ```text
//! rule    := or
//! or      := and ("or" and)*
//! and     := not ("and" not)*
//! not     := "not" not | atom
//! atom    := "(" rule ")" | "@" | "!" | CHECK
//! CHECK   := role:NAME | rule:NAME | is_admin:True|False
//!          | project_id:%(project_id)s | user_id:%(user_id)s | project_id:LITERAL | user_id:LITERAL
//! ```
//!
//! An empty rule allows everyone (`@`), `!` allows no one, as in oslo.policy.

use std::fmt;

/// A parsed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `@` or the empty rule: everyone.
    Always,
    /// `!`: no one.
    Never,
    /// `role:NAME`: the caller holds this role.
    Role(String),
    /// `rule:NAME`: another named rule.
    Ref(String),
    /// `is_admin:True` / `is_admin:False`: the caller holds (or lacks) the admin role.
    IsAdmin(bool),
    /// `project_id:...`: the caller's project equals the target's (or a literal).
    Project(Match),
    /// `user_id:...`: the caller equals the target's user (or a literal).
    User(Match),
    /// `not RULE`.
    Not(Box<Rule>),
    /// `A and B and ...`.
    And(Vec<Rule>),
    /// `A or B or ...`.
    Or(Vec<Rule>),
}

/// What a `project_id:` or `user_id:` check compares with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `%(project_id)s` / `%(user_id)s`: the target's attribute.
    Target,
    /// A fixed value.
    Literal(String),
}

/// Why a rule string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    And,
    Or,
    Not,
    Check(String),
}

fn tokenize(s: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let spaced = s.replace('(', " ( ").replace(')', " ) ");
    // `%(project_id)s` contains parentheses that are not grouping: glue them back.
    let spaced = spaced.replace("% ( ", "%(").replace(" ) s", ")s");
    for word in spaced.split_whitespace() {
        out.push(match word {
            "(" => Token::Open,
            ")" => Token::Close,
            w if w.eq_ignore_ascii_case("and") => Token::And,
            w if w.eq_ignore_ascii_case("or") => Token::Or,
            w if w.eq_ignore_ascii_case("not") => Token::Not,
            w => Token::Check(w.to_owned()),
        });
    }
    out
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn or(&mut self) -> Result<Rule, SyntaxError> {
        let mut items = vec![self.and()?];
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Rule::Or(items)
        })
    }

    fn and(&mut self) -> Result<Rule, SyntaxError> {
        let mut items = vec![self.not()?];
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Rule::And(items)
        })
    }

    fn not(&mut self) -> Result<Rule, SyntaxError> {
        if self.peek() == Some(&Token::Not) {
            self.pos += 1;
            return Ok(Rule::Not(Box::new(self.not()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Rule, SyntaxError> {
        match self.next() {
            Some(Token::Open) => {
                let inner = self.or()?;
                match self.next() {
                    Some(Token::Close) => Ok(inner),
                    _ => Err(SyntaxError("a '(' is never closed".into())),
                }
            }
            Some(Token::Check(c)) => check(&c),
            Some(Token::Close) => Err(SyntaxError("unexpected ')'".into())),
            Some(t) => Err(SyntaxError(format!(
                "expected a check such as role:member, found '{}'",
                match t {
                    Token::And => "and",
                    Token::Or => "or",
                    _ => "not",
                }
            ))),
            None => Err(SyntaxError(
                "the rule ends where a check such as role:member was expected".into(),
            )),
        }
    }
}

fn check(word: &str) -> Result<Rule, SyntaxError> {
    match word {
        "@" => return Ok(Rule::Always),
        "!" => return Ok(Rule::Never),
        _ => {}
    }
    let Some((kind, value)) = word.split_once(':') else {
        return Err(SyntaxError(format!(
            "'{word}' is not a check: use KIND:VALUE, e.g. role:member or rule:admin_api"
        )));
    };
    if value.is_empty() {
        return Err(SyntaxError(format!("'{word}' has nothing after ':'")));
    }
    let target = |attr: &str| -> Result<Match, SyntaxError> {
        if let Some(inner) = value.strip_prefix("%(").and_then(|v| v.strip_suffix(")s")) {
            if inner == attr {
                Ok(Match::Target)
            } else {
                Err(SyntaxError(format!(
                    "'{word}': only %({attr})s can be compared with {attr}"
                )))
            }
        } else {
            Ok(Match::Literal(value.to_owned()))
        }
    };
    match kind {
        "role" => Ok(Rule::Role(value.to_owned())),
        "rule" => Ok(Rule::Ref(value.to_owned())),
        "is_admin" => match value.to_ascii_lowercase().as_str() {
            "true" => Ok(Rule::IsAdmin(true)),
            "false" => Ok(Rule::IsAdmin(false)),
            _ => Err(SyntaxError(format!(
                "'{word}': is_admin is True or False"
            ))),
        },
        "project_id" => Ok(Rule::Project(target("project_id")?)),
        "user_id" => Ok(Rule::User(target("user_id")?)),
        other => Err(SyntaxError(format!(
            "'{word}': unknown check kind '{other}'; use role, rule, is_admin, project_id or user_id"
        ))),
    }
}

impl Rule {
    /// Parses a rule string.
    pub fn parse(s: &str) -> Result<Rule, SyntaxError> {
        let mut p = Parser {
            tokens: tokenize(s),
            pos: 0,
        };
        if p.tokens.is_empty() {
            return Ok(Rule::Always);
        }
        let rule = p.or()?;
        match p.peek() {
            None => Ok(rule),
            Some(Token::Close) => Err(SyntaxError("unexpected ')'".into())),
            Some(_) => Err(SyntaxError(
                "two checks follow each other: join them with 'and' or 'or'".into(),
            )),
        }
    }

    /// Every `rule:NAME` this rule refers to directly.
    pub fn refs(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.walk(&mut |r| {
            if let Rule::Ref(n) = r {
                out.push(n.as_str());
            }
        });
        out
    }

    fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Rule)) {
        f(self);
        match self {
            Rule::Not(r) => r.walk(f),
            Rule::And(rs) | Rule::Or(rs) => rs.iter().for_each(|r| r.walk(f)),
            _ => {}
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = |m: &Match, attr: &str| match m {
            Match::Target => format!("%({attr})s"),
            Match::Literal(v) => v.clone(),
        };
        match self {
            Rule::Always => write!(f, "@"),
            Rule::Never => write!(f, "!"),
            Rule::Role(r) => write!(f, "role:{r}"),
            Rule::Ref(r) => write!(f, "rule:{r}"),
            Rule::IsAdmin(b) => write!(f, "is_admin:{}", if *b { "True" } else { "False" }),
            Rule::Project(p) => write!(f, "project_id:{}", m(p, "project_id")),
            Rule::User(u) => write!(f, "user_id:{}", m(u, "user_id")),
            Rule::Not(r) => write!(f, "not {r}"),
            Rule::And(rs) | Rule::Or(rs) => {
                let sep = if matches!(self, Rule::And(_)) {
                    " and "
                } else {
                    " or "
                };
                let parts: Vec<String> = rs
                    .iter()
                    .map(|r| match r {
                        Rule::And(_) | Rule::Or(_) => format!("({r})"),
                        _ => r.to_string(),
                    })
                    .collect();
                write!(f, "{}", parts.join(sep))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn and_binds_tighter_than_or() {
        let r = Rule::parse("role:a or role:b and role:c").unwrap();
        assert_eq!(
            r,
            Rule::Or(vec![
                Rule::Role("a".into()),
                Rule::And(vec![Rule::Role("b".into()), Rule::Role("c".into())])
            ])
        );
    }

    #[test]
    fn parentheses_group_and_target_substitutions_survive() {
        let r = Rule::parse("(role:a or role:b) and project_id:%(project_id)s").unwrap();
        assert_eq!(
            r,
            Rule::And(vec![
                Rule::Or(vec![Rule::Role("a".into()), Rule::Role("b".into())]),
                Rule::Project(Match::Target)
            ])
        );
        assert_eq!(
            Rule::parse(&r.to_string()).unwrap(),
            r,
            "Display round-trips"
        );
    }

    #[test]
    fn empty_and_bang_and_not() {
        assert_eq!(Rule::parse("").unwrap(), Rule::Always);
        assert_eq!(Rule::parse("  ").unwrap(), Rule::Always);
        assert_eq!(Rule::parse("!").unwrap(), Rule::Never);
        assert_eq!(
            Rule::parse("not role:reader").unwrap(),
            Rule::Not(Box::new(Rule::Role("reader".into())))
        );
        assert_eq!(Rule::parse("is_admin:True").unwrap(), Rule::IsAdmin(true));
    }

    #[test]
    fn syntax_errors_say_what_is_wrong() {
        for (bad, says) in [
            ("role:a or", "ends where a check"),
            ("(role:a", "never closed"),
            ("role:a)", "unexpected ')'"),
            ("role:a role:b", "join them"),
            ("admin", "not a check"),
            ("group:x", "unknown check kind"),
            ("project_id:%(user_id)s", "only %(project_id)s"),
            ("is_admin:maybe", "True or False"),
            ("role:", "nothing after"),
        ] {
            let e = Rule::parse(bad).unwrap_err();
            assert!(e.0.contains(says), "{bad}: {e}");
        }
    }
}
