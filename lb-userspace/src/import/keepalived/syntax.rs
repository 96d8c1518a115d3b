//! keepalived.conf syntax: a tokenizer and a parser into a tree of statements.
//!
//! One statement per line (`keyword arg...`), `{ ... }` blocks (the `{` may also start
//! the next line), `#` and `!` comments to the end of the line, `"..."` quoting (with
//! `\"` and `\\`), `\` at the end of a line continuing it.

use crate::import::ParseError;

/// Blocks nested deeper than this are refused (keepalived itself nests four deep).
pub const MAX_DEPTH: usize = 32;

/// One statement: `keyword args... [{ block }]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub keyword: String,
    pub args: Vec<String>,
    /// 1-based line of the keyword.
    pub line: usize,
    pub block: Option<Vec<Node>>,
}

impl Node {
    /// The first argument, the value of a one-value keyword.
    pub(super) fn arg(&self) -> Option<&str> {
        self.args.first().map(String::as_str)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Eol,
}

/// Splits `text` into words, braces and line ends, each with its line.
fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut word: Option<String> = None;
    let mut chars = text.chars().peekable();
    let flush = |word: &mut Option<String>, out: &mut Vec<(Tok, usize)>, line: usize| {
        if let Some(w) = word.take() {
            out.push((Tok::Word(w), line));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                flush(&mut word, &mut out, line);
                out.push((Tok::Eol, line));
                line += 1;
            }
            ' ' | '\t' | '\r' | '\x0b' | '\x0c' => flush(&mut word, &mut out, line),
            '#' | '!' => {
                flush(&mut word, &mut out, line);
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '{' | '}' => {
                flush(&mut word, &mut out, line);
                out.push((if c == '{' { Tok::Open } else { Tok::Close }, line));
            }
            '\\' if chars.peek() == Some(&'\n') => {
                // Line continuation: the statement goes on, on the next line.
                chars.next();
                flush(&mut word, &mut out, line);
                line += 1;
            }
            '"' => {
                let start = line;
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        None | Some('\n') => {
                            return Err(ParseError {
                                line: start,
                                message: "unterminated quoted string (quotes end on their line)"
                                    .into(),
                            })
                        }
                        Some('"') => break,
                        Some('\\') if matches!(chars.peek(), Some('"' | '\\')) => {
                            w.extend(chars.next());
                        }
                        Some(c) => w.push(c),
                    }
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    flush(&mut word, &mut out, line);
    Ok(out)
}

/// Parses keepalived.conf syntax into a tree of statements.
pub fn parse(text: &str) -> Result<Vec<Node>, ParseError> {
    let tokens = tokenize(text)?;
    let mut pos = 0;
    block(&tokens, &mut pos, 0, None)
}

fn block(
    tokens: &[(Tok, usize)],
    pos: &mut usize,
    depth: usize,
    opened: Option<usize>,
) -> Result<Vec<Node>, ParseError> {
    if depth > MAX_DEPTH {
        return Err(ParseError {
            line: opened.unwrap_or(0),
            message: format!("blocks nested deeper than {MAX_DEPTH}"),
        });
    }
    let mut nodes: Vec<Node> = Vec::new();
    // Whether the last statement ended at a line end without a block: only then may a
    // `{` at the start of a line open its block.
    let mut may_open = false;
    while let Some((tok, line)) = tokens.get(*pos) {
        *pos += 1;
        match tok {
            Tok::Eol => {}
            Tok::Close => {
                return match opened {
                    Some(_) => Ok(nodes),
                    None => Err(ParseError {
                        line: *line,
                        message: "`}` without a matching `{`".into(),
                    }),
                }
            }
            Tok::Open => match nodes.last_mut() {
                Some(node) if may_open && node.block.is_none() => {
                    node.block = Some(block(tokens, pos, depth + 1, Some(*line))?);
                    may_open = false;
                }
                _ => {
                    return Err(ParseError {
                        line: *line,
                        message: "`{` without a keyword before it".into(),
                    })
                }
            },
            Tok::Word(keyword) => {
                let mut node = Node {
                    keyword: keyword.clone(),
                    args: Vec::new(),
                    line: *line,
                    block: None,
                };
                may_open = true;
                while let Some((tok, line)) = tokens.get(*pos) {
                    match tok {
                        Tok::Word(w) => node.args.push(w.clone()),
                        Tok::Open => {
                            *pos += 1;
                            node.block = Some(block(tokens, pos, depth + 1, Some(*line))?);
                            may_open = false;
                            break;
                        }
                        Tok::Close => {
                            may_open = false;
                            break;
                        }
                        Tok::Eol => break,
                    }
                    *pos += 1;
                }
                nodes.push(node);
            }
        }
    }
    match opened {
        Some(line) => Err(ParseError {
            line,
            message: "`{` opened here is never closed".into(),
        }),
        None => Ok(nodes),
    }
}
