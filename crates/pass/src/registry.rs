//! The pass registry and the textual pipeline syntax.
//!
//! A pipeline is a comma-separated list of steps; a step is a pass name with optional options
//! in parentheses:
//!
//! ```text
//! canonicalize,prune-channels(ratio=0.3,score=l1),quantize(bits=4,group=128,method=gptq)
//! ```
//!
//! Option values are numbers, `true`/`false`, bare words, `"quoted strings"` or `[lists]`.
//! Names of passes and options are kebab-case. Unknown passes and options are errors that list
//! the valid ones.

use crate::{Pass, PassError};
use serde::de::DeserializeOwned;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One documented option of a pass.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OptionInfo {
    /// Kebab-case name.
    pub name: String,
    /// Type: `int`, `float`, `bool`, `string`, `list`, or the choices `a|b|c`.
    pub kind: String,
    /// Default, as it would be written in a pipeline (empty: required or none).
    pub default: String,
    /// One line of help.
    pub help: String,
}

impl OptionInfo {
    /// An option.
    pub fn new(name: &str, kind: &str, default: &str, help: &str) -> OptionInfo {
        OptionInfo {
            name: name.into(),
            kind: kind.into(),
            default: default.into(),
            help: help.into(),
        }
    }

    fn is_textual(&self) -> bool {
        self.kind == "string" || self.kind.contains('|')
    }
}

/// What the registry knows about a pass or a named pipeline.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PassInfo {
    /// Kebab-case name.
    pub name: String,
    /// One-line summary.
    pub summary: String,
    /// Options.
    pub options: Vec<OptionInfo>,
    /// For a named pipeline: its steps.
    pub pipeline: Option<String>,
    /// For a named pipeline: whether it repeats until nothing changes.
    pub fixpoint: bool,
}

impl PassInfo {
    /// A pass without options.
    pub fn new(name: &str, summary: &str) -> PassInfo {
        PassInfo {
            name: name.into(),
            summary: summary.into(),
            options: Vec::new(),
            pipeline: None,
            fixpoint: false,
        }
    }

    /// Adds an option.
    pub fn option(mut self, name: &str, kind: &str, default: &str, help: &str) -> PassInfo {
        self.options
            .push(OptionInfo::new(name, kind, default, help));
        self
    }

    /// The options of a pass's `search=evo` ([`crate::search`]): `generations`, `offspring` and
    /// `search-samples`, with these defaults.
    pub fn evo_search_options(
        self,
        generations: usize,
        offspring: usize,
        samples: usize,
    ) -> PassInfo {
        self.option(
            "generations",
            "int",
            &generations.to_string(),
            "search=evo: generations",
        )
        .option(
            "offspring",
            "int",
            &offspring.to_string(),
            "search=evo: candidates per generation",
        )
        .option(
            "search-samples",
            "int",
            &samples.to_string(),
            "search=evo: calibration samples that score a candidate (0: all)",
        )
    }
}

/// The options a step was given, checked against the pass's documented options.
#[derive(Clone, Debug, Default)]
pub struct PassOptions {
    pass: String,
    values: BTreeMap<String, Json>,
}

impl PassOptions {
    /// Options of `pass` from already-typed values (for building pipelines in code).
    pub fn from_map(pass: &str, values: BTreeMap<String, Json>) -> PassOptions {
        PassOptions {
            pass: pass.to_string(),
            values,
        }
    }

    /// Deserializes the options into `T` (use `#[serde(default, rename_all = "kebab-case")]`
    /// on `T` so omitted options take their defaults).
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, PassError> {
        let obj: serde_json::Map<String, Json> = self
            .values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        serde_json::from_value(Json::Object(obj)).map_err(|e| PassError::Options {
            pass: self.pass.clone(),
            message: e.to_string(),
        })
    }

    /// The raw value of one option.
    pub fn get(&self, name: &str) -> Option<&Json> {
        self.values.get(name)
    }

    /// True when no option was given.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The options as they would be written in a pipeline: `a=1,b=x`.
    pub fn to_pipeline_text(&self) -> String {
        self.values
            .iter()
            .map(|(k, v)| format!("{k}={}", value_text(v)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn value_text(v: &Json) -> String {
    match v {
        Json::String(s) => {
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
            {
                s.clone()
            } else {
                format!("{:?}", s)
            }
        }
        Json::Array(a) => format!(
            "[{}]",
            a.iter().map(value_text).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// Builds a pass from its options.
pub type PassFactory = Arc<dyn Fn(&PassOptions) -> Result<Box<dyn Pass>, PassError> + Send + Sync>;

#[derive(Clone)]
struct Entry {
    info: PassInfo,
    factory: Option<PassFactory>,
}

/// The passes a pipeline can name.
#[derive(Clone, Default)]
pub struct Registry {
    entries: BTreeMap<String, Entry>,
}

/// A parsed, not yet built, pipeline step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepSpec {
    /// Pass name.
    pub name: String,
    /// Options in the order given, as raw text values (typed when built).
    pub options: Vec<(String, RawValue)>,
    /// 1-based column of the name in the pipeline text.
    pub column: usize,
}

/// An option value as written.
#[derive(Clone, Debug, PartialEq)]
pub enum RawValue {
    /// A bare word or number.
    Word(String),
    /// A quoted string.
    Quoted(String),
    /// A bracketed list.
    List(Vec<RawValue>),
}

impl RawValue {
    fn to_json(&self, textual: bool) -> Json {
        match self {
            RawValue::Quoted(s) => Json::String(s.clone()),
            RawValue::List(items) => {
                Json::Array(items.iter().map(|i| i.to_json(textual)).collect())
            }
            RawValue::Word(w) => {
                if textual {
                    return Json::String(w.clone());
                }
                if w == "true" || w == "false" {
                    return Json::Bool(w == "true");
                }
                if let Ok(i) = w.parse::<i64>() {
                    return Json::from(i);
                }
                if let Ok(f) = w.parse::<f64>() {
                    if let Some(n) = serde_json::Number::from_f64(f) {
                        return Json::Number(n);
                    }
                }
                Json::String(w.clone())
            }
        }
    }
}

/// One step of a built pipeline.
pub enum Step {
    /// A pass.
    Pass {
        /// `name(options)` as it would be written.
        spec: String,
        /// The pass.
        pass: Box<dyn Pass>,
    },
    /// A named pipeline (e.g. `canonicalize`).
    Group {
        /// Its name.
        name: String,
        /// Its steps.
        steps: Vec<Step>,
        /// Repeat until no step changes the graph.
        fixpoint: bool,
    },
}

impl Step {
    /// The text this step is written as.
    pub fn spec(&self) -> String {
        match self {
            Step::Pass { spec, .. } => spec.clone(),
            Step::Group { name, .. } => name.clone(),
        }
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers a pass. A later registration of the same name replaces the earlier one.
    pub fn register(
        &mut self,
        info: PassInfo,
        factory: impl Fn(&PassOptions) -> Result<Box<dyn Pass>, PassError> + Send + Sync + 'static,
    ) {
        self.entries.insert(
            info.name.clone(),
            Entry {
                info,
                factory: Some(Arc::new(factory)),
            },
        );
    }

    /// Registers a pass without options built by `Default`.
    pub fn register_default<P: Pass + Default + 'static>(&mut self, name: &str, summary: &str) {
        self.register(PassInfo::new(name, summary), |_| Ok(Box::new(P::default())));
    }

    /// Registers a named pipeline; with `fixpoint` it repeats until nothing changes.
    pub fn register_pipeline(&mut self, name: &str, summary: &str, pipeline: &str, fixpoint: bool) {
        let mut info = PassInfo::new(name, summary);
        info.pipeline = Some(pipeline.to_string());
        info.fixpoint = fixpoint;
        self.entries.insert(
            name.to_string(),
            Entry {
                info,
                factory: None,
            },
        );
    }

    /// Every registered pass and pipeline, by name.
    pub fn passes(&self) -> impl Iterator<Item = &PassInfo> {
        self.entries.values().map(|e| &e.info)
    }

    /// The entry named `name`.
    pub fn info(&self, name: &str) -> Option<&PassInfo> {
        self.entries.get(name).map(|e| &e.info)
    }

    fn available(&self) -> String {
        self.entries.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// Parses and builds a pipeline.
    pub fn build(&self, pipeline: &str) -> Result<Vec<Step>, PassError> {
        let specs = parse_pipeline(pipeline)?;
        self.build_specs(&specs, 0)
    }

    /// Checks a pipeline without building passes that need data (parse, names, options).
    pub fn check(&self, pipeline: &str) -> Result<(), PassError> {
        self.build(pipeline).map(|_| ())
    }

    fn build_specs(&self, specs: &[StepSpec], depth: usize) -> Result<Vec<Step>, PassError> {
        if depth > 16 {
            return Err(PassError::Options {
                pass: specs.first().map(|s| s.name.clone()).unwrap_or_default(),
                message: "named pipelines nest more than 16 deep (a cycle?)".into(),
            });
        }
        let mut steps = Vec::new();
        for s in specs {
            let entry = self
                .entries
                .get(&s.name)
                .ok_or_else(|| PassError::UnknownPass {
                    name: s.name.clone(),
                    available: self.available(),
                })?;
            match (&entry.factory, &entry.info.pipeline) {
                (Some(f), _) => {
                    let opts = self.typed_options(&entry.info, s)?;
                    let pass = f(&opts)?;
                    let spec = if opts.is_empty() {
                        s.name.clone()
                    } else {
                        format!("{}({})", s.name, opts.to_pipeline_text())
                    };
                    steps.push(Step::Pass { spec, pass });
                }
                (None, Some(p)) => {
                    if !s.options.is_empty() {
                        return Err(PassError::Options {
                            pass: s.name.clone(),
                            message: format!("a named pipeline takes no options (it runs: {p})"),
                        });
                    }
                    let inner = parse_pipeline(p)?;
                    steps.push(Step::Group {
                        name: s.name.clone(),
                        steps: self.build_specs(&inner, depth + 1)?,
                        fixpoint: entry.info.fixpoint,
                    });
                }
                (None, None) => unreachable!("registry entries have a factory or a pipeline"),
            }
        }
        Ok(steps)
    }

    fn typed_options(&self, info: &PassInfo, s: &StepSpec) -> Result<PassOptions, PassError> {
        let mut values = BTreeMap::new();
        for (k, v) in &s.options {
            let Some(o) = info.options.iter().find(|o| o.name == *k) else {
                let valid = if info.options.is_empty() {
                    "it takes no options".to_string()
                } else {
                    format!(
                        "valid options: {}",
                        info.options
                            .iter()
                            .map(|o| format!("{} ({})", o.name, o.kind))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                return Err(PassError::Options {
                    pass: info.name.clone(),
                    message: format!("unknown option '{k}'; {valid}"),
                });
            };
            if values
                .insert(k.clone(), v.to_json(o.is_textual()))
                .is_some()
            {
                return Err(PassError::Options {
                    pass: info.name.clone(),
                    message: format!("option '{k}' given twice"),
                });
            }
            if o.kind.contains('|') {
                if let RawValue::Word(w) | RawValue::Quoted(w) = v {
                    if !o.kind.split('|').any(|c| c == w) {
                        return Err(PassError::Options {
                            pass: info.name.clone(),
                            message: format!("option '{k}' must be one of {}, not '{w}'", o.kind),
                        });
                    }
                }
            }
        }
        Ok(PassOptions {
            pass: info.name.clone(),
            values,
        })
    }
}

/// Parses pipeline text into step specs (without looking anything up).
pub fn parse_pipeline(text: &str) -> Result<Vec<StepSpec>, PassError> {
    let mut p = Parser {
        text,
        chars: text.char_indices().collect(),
        pos: 0,
    };
    let mut steps = Vec::new();
    p.skip_ws();
    if p.peek().is_none() {
        return Ok(steps);
    }
    loop {
        steps.push(p.step()?);
        p.skip_ws();
        match p.peek() {
            None => break,
            Some(',') => p.pos += 1,
            Some(c) => return Err(p.err(&format!("expected ',' between passes, found '{c}'"))),
        }
    }
    Ok(steps)
}

struct Parser<'a> {
    text: &'a str,
    chars: Vec<(usize, char)>,
    pos: usize,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).map(|&(_, c)| c)
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn err(&self, message: &str) -> PassError {
        let column = self.pos + 1;
        PassError::Syntax {
            column,
            message: message.to_string(),
            pipeline: self.text.to_string(),
            caret: format!("{}^", " ".repeat(self.pos)),
        }
    }

    fn name(&mut self, what: &str) -> Result<String, PassError> {
        self.skip_ws();
        let start = self.pos;
        while self.peek().is_some_and(is_name_char) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.err(&format!("expected {what}")));
        }
        Ok(self.chars[start..self.pos]
            .iter()
            .map(|&(_, c)| c)
            .collect())
    }

    fn step(&mut self) -> Result<StepSpec, PassError> {
        self.skip_ws();
        let column = self.pos + 1;
        let name = self.name("a pass name")?;
        let mut options = Vec::new();
        self.skip_ws();
        if self.peek() == Some('(') {
            self.pos += 1;
            self.skip_ws();
            if self.peek() == Some(')') {
                self.pos += 1;
            } else {
                loop {
                    let key = self.name("an option name")?;
                    self.skip_ws();
                    if self.peek() != Some('=') {
                        return Err(self.err(&format!("expected '=' after option '{key}'")));
                    }
                    self.pos += 1;
                    let v = self.value()?;
                    options.push((key, v));
                    self.skip_ws();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        Some(')') => {
                            self.pos += 1;
                            break;
                        }
                        _ => return Err(self.err("expected ',' or ')' in the option list")),
                    }
                }
            }
        }
        Ok(StepSpec {
            name,
            options,
            column,
        })
    }

    fn value(&mut self) -> Result<RawValue, PassError> {
        self.skip_ws();
        match self.peek() {
            Some('"') => {
                self.pos += 1;
                let mut s = String::new();
                loop {
                    match self.peek() {
                        None => return Err(self.err("unterminated string")),
                        Some('"') => {
                            self.pos += 1;
                            break;
                        }
                        Some('\\') => {
                            self.pos += 1;
                            match self.peek() {
                                Some(c) => s.push(c),
                                None => return Err(self.err("unterminated string")),
                            }
                            self.pos += 1;
                        }
                        Some(c) => {
                            s.push(c);
                            self.pos += 1;
                        }
                    }
                }
                Ok(RawValue::Quoted(s))
            }
            Some('[') => {
                self.pos += 1;
                let mut items = Vec::new();
                self.skip_ws();
                if self.peek() == Some(']') {
                    self.pos += 1;
                    return Ok(RawValue::List(items));
                }
                loop {
                    items.push(self.value()?);
                    self.skip_ws();
                    match self.peek() {
                        Some(',') => self.pos += 1,
                        Some(']') => {
                            self.pos += 1;
                            break;
                        }
                        _ => return Err(self.err("expected ',' or ']' in a list")),
                    }
                }
                Ok(RawValue::List(items))
            }
            _ => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| is_name_char(c) || matches!(c, '+' | '%' | '/'))
                {
                    self.pos += 1;
                }
                if self.pos == start {
                    return Err(self.err("expected a value"));
                }
                Ok(RawValue::Word(
                    self.chars[start..self.pos]
                        .iter()
                        .map(|&(_, c)| c)
                        .collect(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_steps_and_options() {
        let s = parse_pipeline(" canonicalize, q(bits=4, group=128,method=gptq , l=[1,2]),x() ")
            .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "canonicalize");
        assert_eq!(s[1].options.len(), 4);
        assert_eq!(
            s[1].options[3].1,
            RawValue::List(vec![RawValue::Word("1".into()), RawValue::Word("2".into())])
        );
        assert!(s[2].options.is_empty());
        assert!(parse_pipeline("").unwrap().is_empty());
    }

    #[test]
    fn syntax_errors_point_at_the_column() {
        let e = parse_pipeline("a(b=1,,)").unwrap_err().to_string();
        assert!(e.contains("column 7"), "{e}");
        let e = parse_pipeline("a b").unwrap_err().to_string();
        assert!(e.contains("expected ','"), "{e}");
        assert!(parse_pipeline("a(b=\"x").is_err());
        assert!(parse_pipeline("a(b)").is_err());
    }
}
