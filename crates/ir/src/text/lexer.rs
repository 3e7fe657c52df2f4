//! The lexer: source text to tokens with 1-based line/column positions.
//!
//! Whitespace (newlines included) separates tokens and is otherwise insignificant; `//` starts
//! a comment that runs to the end of the line.

use super::{is_name_char, ParseError};
use std::fmt;

/// A token kind with its payload.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// `%name`, `%"any name"`, `%name#2`, `%#0`: a value name and its disambiguator.
    Value(String, Option<u32>),
    /// `@name` or `@"any name"`.
    Global(String),
    /// `[A-Za-z_][A-Za-z0-9_]*`: keywords, op names, attribute names, dtypes, symbolic dims.
    Ident(String),
    /// A double-quoted string, unescaped.
    Str(String),
    /// An integer literal (wide enough for every u64 and i64).
    Int(i128),
    /// A float literal, as written (`1.5`, `1e-5`, `-inf`, `-nan`).
    Float(String),
    /// `0x...`: raw bytes.
    Hex(Vec<u8>),
    /// `...`
    Ellipsis,
    /// `->`
    Arrow,
    /// One of `( ) [ ] { } < > , = : * ?`.
    Punct(char),
    /// End of input.
    Eof,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Value(n, k) => {
                let mut s = String::new();
                super::printer::write_value_ref(&mut s, n, *k);
                write!(f, "value {s}")
            }
            Tok::Global(n) => write!(f, "'@{n}'"),
            Tok::Ident(s) => write!(f, "'{s}'"),
            Tok::Str(s) => {
                let mut q = String::new();
                super::write_quoted(&mut q, s);
                write!(f, "string {q}")
            }
            Tok::Int(i) => write!(f, "integer {i}"),
            Tok::Float(s) => write!(f, "float {s}"),
            Tok::Hex(_) => f.write_str("hex data"),
            Tok::Ellipsis => f.write_str("'...'"),
            Tok::Arrow => f.write_str("'->'"),
            Tok::Punct(c) => write!(f, "'{c}'"),
            Tok::Eof => f.write_str("end of input"),
        }
    }
}

/// A token and where it starts.
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: usize,
    pub col: usize,
}

struct Lexer<'a> {
    src: &'a str,
    /// Byte offset of the next character.
    pos: usize,
    line: usize,
    col: usize,
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.src[self.pos..].chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn err(&self, line: usize, col: usize, msg: impl Into<String>) -> ParseError {
        ParseError {
            line,
            col,
            msg: msg.into(),
        }
    }

    fn skip_trivia(&mut self) {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('/') if self.peek_at(1) == Some('/') => {
                    while let Some(c) = self.peek() {
                        if c == '\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                _ => return,
            }
        }
    }

    /// A double-quoted string; the opening quote is the next character.
    fn string(&mut self) -> Result<String, ParseError> {
        let (line, col) = (self.line, self.col);
        self.bump();
        let mut s = String::new();
        loop {
            let (el, ec) = (self.line, self.col);
            match self.bump() {
                None => return Err(self.err(line, col, "unterminated string")),
                Some('"') => return Ok(s),
                Some('\\') => match self.bump() {
                    Some('"') => s.push('"'),
                    Some('\\') => s.push('\\'),
                    Some('n') => s.push('\n'),
                    Some('r') => s.push('\r'),
                    Some('t') => s.push('\t'),
                    Some('0') => s.push('\0'),
                    Some('u') => {
                        if self.bump() != Some('{') {
                            return Err(self.err(el, ec, "expected '{' after \\u"));
                        }
                        let mut hex = String::new();
                        loop {
                            match self.bump() {
                                Some('}') => break,
                                Some(c) if c.is_ascii_hexdigit() && hex.len() < 6 => hex.push(c),
                                _ => return Err(self.err(el, ec, "invalid \\u{...} escape")),
                            }
                        }
                        let c = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| {
                                self.err(el, ec, format!("invalid unicode escape \\u{{{hex}}}"))
                            })?;
                        s.push(c);
                    }
                    Some(c) => return Err(self.err(el, ec, format!("unknown escape '\\{c}'"))),
                    None => return Err(self.err(line, col, "unterminated string")),
                },
                Some(c) => s.push(c),
            }
        }
    }

    /// The name after `%` or `@`: bare name characters or a quoted string (possibly absent).
    fn name(&mut self) -> Result<Option<String>, ParseError> {
        if self.peek() == Some('"') {
            return self.string().map(Some);
        }
        let start = self.pos;
        while self.peek().is_some_and(is_name_char) {
            self.bump();
        }
        Ok((self.pos > start).then(|| self.src[start..self.pos].to_string()))
    }

    fn number(&mut self, line: usize, col: usize) -> Result<Tok, ParseError> {
        let start = self.pos;
        if self.peek() == Some('-') {
            self.bump();
        }
        if self.peek() == Some('0')
            && matches!(self.peek_at(1), Some('x' | 'X'))
            && start == self.pos
        {
            self.bump();
            self.bump();
            let hs = self.pos;
            // Constants can be megabytes of hex: scan bytes, not chars (hex digits are ASCII
            // and never newlines, so the column advances by the count).
            let n = self.src.as_bytes()[hs..]
                .iter()
                .take_while(|b| b.is_ascii_hexdigit())
                .count();
            self.pos += n;
            self.col += n;
            let hex = &self.src[hs..self.pos];
            if hex.len() & 1 == 1 {
                return Err(self.err(
                    line,
                    col,
                    format!("odd number of hex digits ({})", hex.len()),
                ));
            }
            let bytes = hex
                .as_bytes()
                .chunks_exact(2)
                .map(|p| (hexval(p[0]) << 4) | hexval(p[1]))
                .collect();
            return Ok(Tok::Hex(bytes));
        }
        let mut float = false;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        if self.peek() == Some('.') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
            float = true;
            self.bump();
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
            }
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            let sign = matches!(self.peek_at(1), Some('+' | '-'));
            let digit_at = if sign { 2 } else { 1 };
            if self.peek_at(digit_at).is_some_and(|c| c.is_ascii_digit()) {
                float = true;
                for _ in 0..digit_at {
                    self.bump();
                }
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.bump();
                }
            }
        }
        if self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            let bad = self.peek().unwrap_or(' ');
            return Err(self.err(
                self.line,
                self.col,
                format!("unexpected character '{bad}' in number"),
            ));
        }
        let text = &self.src[start..self.pos];
        if float {
            return Ok(Tok::Float(text.to_string()));
        }
        text.parse::<i128>()
            .ok()
            .filter(|v| (i64::MIN as i128..=u64::MAX as i128).contains(v))
            .map(Tok::Int)
            .ok_or_else(|| self.err(line, col, format!("integer {text} is out of range")))
    }

    fn token(&mut self) -> Result<Token, ParseError> {
        self.skip_trivia();
        let (line, col) = (self.line, self.col);
        let at = |tok| Ok(Token { tok, line, col });
        let Some(c) = self.peek() else {
            return at(Tok::Eof);
        };
        match c {
            '%' => {
                self.bump();
                let name = self.name()?;
                let k = if self.peek() == Some('#') {
                    self.bump();
                    let ds = self.pos;
                    while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                        self.bump();
                    }
                    let digits = &self.src[ds..self.pos];
                    Some(digits.parse::<u32>().map_err(|_| {
                        self.err(line, col, "expected a number after '#' in a value name")
                    })?)
                } else {
                    None
                };
                if name.is_none() && k.is_none() {
                    return Err(self.err(line, col, "expected a value name after '%'"));
                }
                at(Tok::Value(name.unwrap_or_default(), k))
            }
            '@' => {
                self.bump();
                match self.name()? {
                    Some(n) => at(Tok::Global(n)),
                    None => Err(self.err(line, col, "expected a graph name after '@'")),
                }
            }
            '"' => {
                let s = self.string()?;
                at(Tok::Str(s))
            }
            '.' if self.src[self.pos..].starts_with("...") => {
                self.pos += 3;
                self.col += 3;
                at(Tok::Ellipsis)
            }
            '-' if self.peek_at(1) == Some('>') => {
                self.bump();
                self.bump();
                at(Tok::Arrow)
            }
            '-' if self.src[self.pos..].starts_with("-inf")
                || self.src[self.pos..].starts_with("-nan") =>
            {
                let word: String = self.src[self.pos + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if word != "inf" && word != "nan" {
                    return Err(self.err(line, col, format!("unexpected '-{word}'")));
                }
                for _ in 0..4 {
                    self.bump();
                }
                at(Tok::Float(format!("-{word}")))
            }
            c if c.is_ascii_digit() || c == '-' => {
                if c == '-' && !self.peek_at(1).is_some_and(|d| d.is_ascii_digit()) {
                    return Err(self.err(line, col, "unexpected character '-'"));
                }
                let t = self.number(line, col)?;
                at(t)
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.bump();
                }
                at(Tok::Ident(self.src[start..self.pos].to_string()))
            }
            '(' | ')' | '[' | ']' | '{' | '}' | '<' | '>' | ',' | '=' | ':' | '*' | '?' => {
                self.bump();
                at(Tok::Punct(c))
            }
            c => Err(self.err(
                line,
                col,
                format!("unexpected character '{}'", c.escape_debug()),
            )),
        }
    }
}

fn hexval(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// Splits `src` into tokens; the last one is [`Tok::Eof`].
pub(crate) fn lex(src: &str) -> Result<Vec<Token>, ParseError> {
    let mut lx = Lexer {
        src,
        pos: 0,
        line: 1,
        col: 1,
    };
    let mut toks = Vec::new();
    loop {
        let t = lx.token()?;
        let eof = t.tok == Tok::Eof;
        toks.push(t);
        if eof {
            return Ok(toks);
        }
    }
}
