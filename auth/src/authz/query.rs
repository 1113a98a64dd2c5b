//! The client-group query language (Event Grid client group queries).
//!
//! ```text
//! query      := or
//! or         := and ("OR" and)*
//! and        := not ("AND" not)*
//! not        := "NOT" not | primary
//! primary    := "(" or ")" | comparison
//! comparison := operand ( ("=" | "<>" | "!=" | "<" | ">" | "<=" | ">=") literal
//!                       | ["NOT"] "IN" "[" literal ("," literal)* "]" )
//! operand    := "authenticationName" | "attributes." key
//! literal    := 'string' (a quote inside is doubled: 'it''s') | integer | TRUE | FALSE
//! ```
//!
//! Keywords and the two operand names are case-insensitive; attribute keys and string values
//! are compared exactly. A comparison is true when the client's value has the literal's type
//! and satisfies it; for an array attribute, when any element does. A missing attribute
//! satisfies no comparison (so `NOT attributes.x = 'a'` holds for a client without `x`).
//!
//! The parser is recursive descent with a depth limit, so a hostile registry cannot overflow
//! the stack; errors carry the character offset (0-based, in characters, not bytes).

use crate::{AttrValue, Identity};

/// Longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 4096;
/// Deepest nesting of parentheses and `NOT`s.
pub const MAX_QUERY_DEPTH: usize = 32;
/// Most literals in one `IN [...]` list.
pub const MAX_IN_LIST: usize = 256;

/// Where and why a query does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at character offset {offset}: {message}")]
pub struct QueryError {
    /// 0-based offset in characters from the start of the query.
    pub offset: usize,
    pub message: String,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Or(Vec<Query>),
    And(Vec<Query>),
    Not(Box<Query>),
    Compare(Operand, Op, Literal),
    In(Operand, Vec<Literal>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    AuthenticationName,
    Attribute(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    String(String),
    Integer(i64),
    Bool(bool),
}

impl Query {
    /// Whether `identity` satisfies the query.
    pub fn eval(&self, identity: &Identity) -> bool {
        match self {
            Query::Or(qs) => qs.iter().any(|q| q.eval(identity)),
            Query::And(qs) => qs.iter().all(|q| q.eval(identity)),
            Query::Not(q) => !q.eval(identity),
            Query::Compare(operand, op, lit) => {
                any_value(operand, identity, &mut |v| compare(v, *op, lit))
            }
            Query::In(operand, lits) => any_value(operand, identity, &mut |v| {
                lits.iter().any(|l| compare(v, Op::Eq, l))
            }),
        }
    }
}

/// A client's value of an operand, seen as a scalar or not at all.
#[derive(Clone, Copy)]
enum Scalar<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
}

fn any_value(
    operand: &Operand,
    identity: &Identity,
    f: &mut dyn FnMut(Scalar<'_>) -> bool,
) -> bool {
    match operand {
        Operand::AuthenticationName => f(Scalar::Str(&identity.authentication_name)),
        Operand::Attribute(key) => identity
            .attributes
            .get(key)
            .is_some_and(|v| any_scalar(v, f)),
    }
}

fn any_scalar(value: &AttrValue, f: &mut dyn FnMut(Scalar<'_>) -> bool) -> bool {
    match value {
        AttrValue::String(s) => f(Scalar::Str(s)),
        AttrValue::Integer(i) => f(Scalar::Int(*i)),
        AttrValue::Bool(b) => f(Scalar::Bool(*b)),
        // Nested arrays are flattened: an element matches when any of its elements does.
        AttrValue::Array(items) => items.iter().any(|v| any_scalar(v, f)),
    }
}

fn compare(value: Scalar<'_>, op: Op, lit: &Literal) -> bool {
    let ordering = match (value, lit) {
        (Scalar::Str(a), Literal::String(b)) => a.cmp(b.as_str()),
        (Scalar::Int(a), Literal::Integer(b)) => a.cmp(b),
        (Scalar::Bool(a), Literal::Bool(b)) => a.cmp(b),
        _ => return false,
    };
    // The parser only lets integers through with an ordering operator.
    match op {
        Op::Eq => ordering.is_eq(),
        Op::Ne => ordering.is_ne(),
        Op::Lt => ordering.is_lt(),
        Op::Gt => ordering.is_gt(),
        Op::Le => ordering.is_le(),
        Op::Ge => ordering.is_ge(),
    }
}

/// Parses a query.
pub fn parse(text: &str) -> Result<Query, QueryError> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() > MAX_QUERY_CHARS {
        return Err(QueryError {
            offset: MAX_QUERY_CHARS,
            message: format!("query is longer than {MAX_QUERY_CHARS} characters"),
        });
    }
    let mut p = Parser {
        chars,
        pos: 0,
        depth: 0,
    };
    p.skip_ws();
    if p.at_end() {
        return Err(p.error("the query is empty"));
    }
    let q = p.or()?;
    p.skip_ws();
    if !p.at_end() {
        return Err(p.error(format!("expected AND, OR or the end, found {}", p.found())));
    }
    Ok(q)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

impl Parser {
    fn error(&self, message: impl Into<String>) -> QueryError {
        QueryError {
            offset: self.pos,
            message: message.into(),
        }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// A description of what is at the current position, for error messages.
    fn found(&self) -> String {
        if self.at_end() {
            return "the end of the query".into();
        }
        let word: String = self.chars[self.pos..]
            .iter()
            .take_while(|c| !c.is_whitespace())
            .take(20)
            .collect();
        format!("`{word}`")
    }

    /// The word (letters, digits, `_`, `-`) at the current position, without consuming it.
    fn word(&self) -> String {
        self.chars[self.pos.min(self.chars.len())..]
            .iter()
            .take_while(|&&c| is_word_char(c))
            .collect()
    }

    /// Consumes `keyword` (case-insensitive) when it is the next whole word.
    fn keyword(&mut self, keyword: &str) -> bool {
        self.skip_ws();
        let word = self.word();
        if word.eq_ignore_ascii_case(keyword) {
            self.pos += word.chars().count();
            true
        } else {
            false
        }
    }

    fn nest(&mut self) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_QUERY_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_QUERY_DEPTH} levels")));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Query, QueryError> {
        let mut terms = vec![self.and()?];
        while self.keyword("OR") {
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.swap_remove(0)
        } else {
            Query::Or(terms)
        })
    }

    fn and(&mut self) -> Result<Query, QueryError> {
        let mut terms = vec![self.not()?];
        while self.keyword("AND") {
            terms.push(self.not()?);
        }
        Ok(if terms.len() == 1 {
            terms.swap_remove(0)
        } else {
            Query::And(terms)
        })
    }

    fn not(&mut self) -> Result<Query, QueryError> {
        if self.keyword("NOT") {
            self.nest()?;
            let q = self.not()?;
            self.depth -= 1;
            return Ok(Query::Not(Box::new(q)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Query, QueryError> {
        self.skip_ws();
        if self.peek() == Some('(') {
            self.pos += 1;
            self.nest()?;
            let q = self.or()?;
            self.depth -= 1;
            self.skip_ws();
            if self.peek() != Some(')') {
                return Err(self.error(format!("expected `)`, found {}", self.found())));
            }
            self.pos += 1;
            return Ok(q);
        }
        self.comparison()
    }

    fn operand(&mut self) -> Result<Operand, QueryError> {
        self.skip_ws();
        let start = self.pos;
        let word = self.word();
        if word.eq_ignore_ascii_case("authenticationName") {
            self.pos += word.chars().count();
            return Ok(Operand::AuthenticationName);
        }
        if word.eq_ignore_ascii_case("attributes")
            && self.chars.get(self.pos + word.len()) == Some(&'.')
        {
            self.pos += word.len() + 1;
            let key = self.word();
            if key.is_empty() {
                return Err(self.error(format!(
                    "expected an attribute name after `attributes.`, found {}",
                    self.found()
                )));
            }
            self.pos += key.chars().count();
            return Ok(Operand::Attribute(key));
        }
        self.pos = start;
        Err(self.error(format!(
            "expected `attributes.<name>`, `authenticationName`, `NOT` or `(`, found {}",
            self.found()
        )))
    }

    fn comparison(&mut self) -> Result<Query, QueryError> {
        let operand = self.operand()?;
        self.skip_ws();
        let save = self.pos;
        let negated = self.keyword("NOT");
        if self.keyword("IN") {
            let list = self.in_list()?;
            let q = Query::In(operand, list);
            return Ok(if negated { Query::Not(Box::new(q)) } else { q });
        }
        if negated {
            self.pos = save;
            self.skip_ws();
            return Err(self.error("`NOT` after an operand must be followed by `IN`"));
        }
        let op = self.operator()?;
        self.skip_ws();
        let lit_at = self.pos;
        let lit = self.literal()?;
        if !matches!(op, Op::Eq | Op::Ne) && !matches!(lit, Literal::Integer(_)) {
            self.pos = lit_at;
            return Err(self.error("`<`, `>`, `<=` and `>=` compare integers only"));
        }
        Ok(Query::Compare(operand, op, lit))
    }

    fn operator(&mut self) -> Result<Op, QueryError> {
        let two: String = self.chars[self.pos.min(self.chars.len())..]
            .iter()
            .take(2)
            .collect();
        let (op, len) = match two.as_str() {
            "<>" => (Op::Ne, 2),
            "!=" => (Op::Ne, 2),
            "<=" => (Op::Le, 2),
            ">=" => (Op::Ge, 2),
            _ => match self.peek() {
                Some('=') => (Op::Eq, 1),
                Some('<') => (Op::Lt, 1),
                Some('>') => (Op::Gt, 1),
                _ => {
                    return Err(self.error(format!(
                        "expected an operator (=, <>, !=, <, >, <=, >=, IN, NOT IN), found {}",
                        self.found()
                    )));
                }
            },
        };
        self.pos += len;
        if op == Op::Eq && self.peek() == Some('=') {
            return Err(self.error("`==` is not an operator: use `=`"));
        }
        Ok(op)
    }

    fn in_list(&mut self) -> Result<Vec<Literal>, QueryError> {
        self.skip_ws();
        if self.peek() != Some('[') {
            return Err(self.error(format!("expected `[` after IN, found {}", self.found())));
        }
        self.pos += 1;
        let mut list = Vec::new();
        loop {
            self.skip_ws();
            if list.len() >= MAX_IN_LIST {
                return Err(self.error(format!("an IN list holds at most {MAX_IN_LIST} values")));
            }
            list.push(self.literal()?);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(']') => {
                    self.pos += 1;
                    return Ok(list);
                }
                _ => {
                    return Err(self.error(format!("expected `,` or `]`, found {}", self.found())));
                }
            }
        }
    }

    fn literal(&mut self) -> Result<Literal, QueryError> {
        match self.peek() {
            Some('\'') => self.string(),
            Some(c) if c == '-' || c.is_ascii_digit() => self.integer(),
            _ => {
                if self.keyword("TRUE") {
                    return Ok(Literal::Bool(true));
                }
                if self.keyword("FALSE") {
                    return Ok(Literal::Bool(false));
                }
                Err(self.error(format!(
                    "expected a 'string', an integer, TRUE or FALSE, found {}",
                    self.found()
                )))
            }
        }
    }

    fn string(&mut self) -> Result<Literal, QueryError> {
        let start = self.pos;
        self.pos += 1;
        let mut value = String::new();
        loop {
            match self.peek() {
                None => {
                    self.pos = start;
                    return Err(self.error("string literal is not closed with `'`"));
                }
                Some('\'') if self.chars.get(self.pos + 1) == Some(&'\'') => {
                    value.push('\'');
                    self.pos += 2;
                }
                Some('\'') => {
                    self.pos += 1;
                    return Ok(Literal::String(value));
                }
                Some(c) => {
                    value.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn integer(&mut self) -> Result<Literal, QueryError> {
        let start = self.pos;
        let mut text = String::new();
        if self.peek() == Some('-') {
            text.push('-');
            self.pos += 1;
        }
        while let Some(c) = self.peek().filter(char::is_ascii_digit) {
            text.push(c);
            self.pos += 1;
        }
        if self.peek().is_some_and(is_word_char) {
            return Err(self.error(format!("unexpected {} in an integer", self.found())));
        }
        text.parse::<i64>().map(Literal::Integer).map_err(|_| {
            self.pos = start;
            self.error(format!("`{text}` is not a 64-bit integer"))
        })
    }
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;
    use crate::AttrValue as V;

    fn client(name: &str, attrs: &[(&str, V)]) -> Identity {
        let mut id = Identity::anonymous(name);
        for (k, v) in attrs {
            id.attributes.insert((*k).to_owned(), v.clone());
        }
        id
    }

    fn truck() -> Identity {
        client(
            "truck-17",
            &[
                ("type", V::String("truck".into())),
                ("year", V::Integer(2023)),
                (
                    "zones",
                    V::Array(vec![V::String("eu".into()), V::String("us".into())]),
                ),
                ("electric", V::Bool(true)),
            ],
        )
    }

    fn eval(q: &str) -> bool {
        match parse(q) {
            Ok(q) => q.eval(&truck()),
            Err(e) => panic!("{q:?}: {e}"),
        }
    }

    fn err(q: &str) -> QueryError {
        match parse(q) {
            Ok(parsed) => panic!("{q:?} parsed as {parsed:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn operators() {
        for (q, want) in [
            ("attributes.type = 'truck'", true),
            ("attributes.type = 'Truck'", false),
            ("attributes.type <> 'truck'", false),
            ("attributes.type != 'car'", true),
            ("attributes.year = 2023", true),
            ("attributes.year > 2022", true),
            ("attributes.year >= 2023", true),
            ("attributes.year < 2023", false),
            ("attributes.year <= 2023", true),
            ("attributes.year >= -5", true),
            ("attributes.year = '2023'", false),
            ("attributes.type IN ['car', 'truck']", true),
            ("attributes.type NOT IN ['car', 'truck']", false),
            ("attributes.year in [2022, 2023]", true),
            ("attributes.zones = 'us'", true),
            ("attributes.zones = 'asia'", false),
            ("attributes.zones IN ['asia', 'eu']", true),
            ("attributes.electric = TRUE", true),
            ("attributes.electric = false", false),
            ("authenticationName = 'truck-17'", true),
            ("AUTHENTICATIONNAME IN ['a', 'truck-17']", true),
            ("attributes.missing = 'x'", false),
            ("attributes.missing <> 'x'", false),
            ("NOT attributes.missing = 'x'", true),
            ("attributes.name = 'it''s'", false),
        ] {
            assert_eq!(eval(q), want, "{q}");
        }
    }

    #[test]
    fn precedence_not_and_or() {
        // NOT binds tighter than AND, AND tighter than OR.
        assert!(eval(
            "attributes.type = 'car' AND attributes.year = 1 OR attributes.year = 2023"
        ));
        assert!(!eval(
            "attributes.type = 'car' AND (attributes.year = 1 OR attributes.year = 2023)"
        ));
        assert!(!eval(
            "NOT attributes.type = 'truck' AND attributes.year = 2023"
        ));
        assert!(eval(
            "NOT (attributes.type = 'truck' AND attributes.year = 1)"
        ));
        assert!(eval("not not attributes.type = 'truck'"));
        assert!(eval(
            "((attributes.type = 'truck'))and(attributes.year>2000)"
        ));
        assert_eq!(
            parse("attributes.a = 1 OR attributes.b = 2 AND NOT attributes.c = 3"),
            Ok(Query::Or(vec![
                Query::Compare(Operand::Attribute("a".into()), Op::Eq, Literal::Integer(1)),
                Query::And(vec![
                    Query::Compare(Operand::Attribute("b".into()), Op::Eq, Literal::Integer(2)),
                    Query::Not(Box::new(Query::Compare(
                        Operand::Attribute("c".into()),
                        Op::Eq,
                        Literal::Integer(3)
                    ))),
                ]),
            ]))
        );
    }

    #[test]
    fn string_escapes_and_unicode() {
        let id = client("x", &[("name", V::String("it's ü".into()))]);
        let q = parse("attributes.name = 'it''s ü'").map_err(|e| e.to_string());
        assert!(q.is_ok_and(|q| q.eval(&id)));
    }

    #[test]
    fn errors_carry_character_offsets() {
        for (q, offset) in [
            ("", 0),
            ("attributes.type == 'truck'", 17),
            ("attributes.type = truck", 18),
            ("attributes.type = 'truck", 18),
            ("attributes.type = 'a' AND", 25),
            ("attributes.type = 'a' XOR attributes.b = 1", 22),
            ("(attributes.type = 'a'", 22),
            ("attributes. = 'a'", 11),
            ("attribute.type = 'a'", 0),
            ("attributes.year > 'x'", 18),
            ("attributes.year IN []", 20),
            ("attributes.year IN ['a' 'b']", 24),
            ("attributes.year NOT = 1", 16),
            ("attributes.year = 99999999999999999999", 18),
            ("attributes.year = 12ab", 20),
            // Offsets count characters, not bytes.
            ("authenticationName = 'ü' ü", 25),
        ] {
            assert_eq!(err(q).offset, offset, "{q}: {}", err(q));
        }
    }

    #[test]
    fn depth_and_length_are_limited() {
        let deep = format!("{}attributes.a = 1{}", "(".repeat(100), ")".repeat(100));
        assert!(err(&deep).message.contains("nested deeper"));
        let nots = format!("{}attributes.a = 1", "NOT ".repeat(100));
        assert!(err(&nots).message.contains("nested deeper"));
        let long = format!("attributes.a = '{}'", "x".repeat(MAX_QUERY_CHARS));
        assert!(err(&long).message.contains("longer than"));
        let ok = format!("{}attributes.a = 1{}", "(".repeat(10), ")".repeat(10));
        assert!(parse(&ok).is_ok());
    }
}
