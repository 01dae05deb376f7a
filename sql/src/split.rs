//! Splits a file into statements with their line numbers and the comments just before them.
//!
//! sqlparser's statement spans are still incomplete for several statement kinds, and one parse
//! error would lose the rest of the file. So the file is tokenized once (the tokenizer knows
//! strings, quoted identifiers, dollar quotes and comments, so a `;` inside them never splits),
//! cut at top-level semicolons, and each piece is parsed on its own: a statement the parser
//! cannot read becomes one finding at its own line, and the statements around it are still
//! checked. A `BEGIN ATOMIC ... END` function body, whose inner semicolons are bare, is the
//! one shape this cuts wrongly (reported as unparseable, never silently passed).

use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Whitespace};

/// One statement of a file.
#[derive(Debug)]
pub struct Piece {
    /// 1-based line of the statement's first token.
    pub line: u32,
    /// The statement's text, for messages and for unparseable statements.
    pub text: String,
    /// The single-line comments directly above the statement (no blank line or code between),
    /// without `--`, in order.
    pub comments: Vec<String>,
    pub parsed: Result<Statement, String>,
    /// `DROP INDEX CONCURRENTLY`: sqlparser 0.64 reads `CONCURRENTLY` there as the index name,
    /// so the word is taken out before parsing and remembered here.
    pub drop_concurrently: bool,
}

/// The file's statements, or the tokenizer's error with its line.
pub fn split(sql: &str) -> Result<Vec<Piece>, (u32, String)> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| (e.location.line.max(1) as u32, e.message))?;
    let starts: Vec<usize> = std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let mut pieces = Vec::new();
    let mut current: Vec<TokenWithSpan> = Vec::new();
    let mut after_semicolon = false;
    for token in tokens {
        if matches!(token.token, Token::SemiColon) {
            let chunk = std::mem::take(&mut current);
            finish(sql, &starts, chunk, after_semicolon, &mut pieces);
            after_semicolon = true;
        } else {
            current.push(token);
        }
    }
    finish(sql, &starts, current, after_semicolon, &mut pieces);
    Ok(pieces)
}

fn finish(
    sql: &str,
    starts: &[usize],
    tokens: Vec<TokenWithSpan>,
    after_semicolon: bool,
    pieces: &mut Vec<Piece>,
) {
    let Some(first) = tokens.iter().position(|t| !is_whitespace(&t.token)) else {
        return;
    };
    let line = tokens[first].span.start.line as u32;
    let comments = comments_above(&tokens[..first], line, after_semicolon);
    let last = tokens
        .iter()
        .rposition(|t| !is_whitespace(&t.token))
        .unwrap_or(first);
    let text = slice(sql, starts, &tokens[first], &tokens[last]);
    let mut code: Vec<TokenWithSpan> = tokens[first..].to_vec();
    let drop_concurrently = take_drop_index_concurrently(&mut code);
    let parsed = parse(code);
    pieces.push(Piece {
        line,
        text,
        comments,
        parsed,
        drop_concurrently,
    });
}

fn take_drop_index_concurrently(code: &mut Vec<TokenWithSpan>) -> bool {
    let words: Vec<(usize, String)> = code
        .iter()
        .enumerate()
        .filter(|(_, t)| !is_whitespace(&t.token))
        .take(3)
        .filter_map(|(i, t)| match &t.token {
            Token::Word(w) if w.quote_style.is_none() => Some((i, w.value.to_ascii_uppercase())),
            _ => None,
        })
        .collect();
    let is = |n: usize, word: &str| words.get(n).is_some_and(|(_, w)| w == word);
    if is(0, "DROP") && is(1, "INDEX") && is(2, "CONCURRENTLY") {
        code.remove(words[2].0);
        return true;
    }
    false
}

fn is_whitespace(token: &Token) -> bool {
    matches!(token, Token::Whitespace(_))
}

/// The comment lines ending on the line just above `line`, with no blank line between. A
/// comment after a statement's `;` on the same line is that statement's, not this one's.
fn comments_above(leading: &[TokenWithSpan], line: u32, after_semicolon: bool) -> Vec<String> {
    let mut own_line = Vec::new();
    let mut at_line_start = !after_semicolon;
    for token in leading {
        match &token.token {
            Token::Whitespace(Whitespace::SingleLineComment { comment, .. }) => {
                if at_line_start {
                    own_line.push((token.span.start.line as u32, comment.trim().to_owned()));
                }
                // The comment token swallows its line's newline.
                at_line_start = true;
            }
            Token::Whitespace(Whitespace::Newline) => at_line_start = true,
            Token::Whitespace(Whitespace::Space | Whitespace::Tab) => {}
            _ => at_line_start = false,
        }
    }
    let mut out = Vec::new();
    let mut expect = line.saturating_sub(1);
    for (comment_line, comment) in own_line.into_iter().rev() {
        if comment_line != expect {
            break;
        }
        out.push(comment);
        expect = expect.saturating_sub(1);
    }
    out.reverse();
    out
}

/// The source text from the start of `first` to the end of `last` (`starts`: each line's byte
/// offset; token columns count characters).
fn slice(sql: &str, starts: &[usize], first: &TokenWithSpan, last: &TokenWithSpan) -> String {
    let offset = |line: u64, column: u64| -> usize {
        let Some(&start) = starts.get((line as usize).saturating_sub(1)) else {
            return sql.len();
        };
        sql[start..]
            .char_indices()
            .nth(column.saturating_sub(1) as usize)
            .map_or(sql.len(), |(b, _)| start + b)
    };
    let from = offset(first.span.start.line, first.span.start.column);
    let to = offset(last.span.end.line, last.span.end.column);
    sql.get(from..to.max(from)).unwrap_or_default().to_owned()
}

/// Parses one statement's tokens. A panic inside the parser (none is known) is caught so that a
/// hostile file yields a finding, never a crash.
fn parse(tokens: Vec<TokenWithSpan>) -> Result<Statement, String> {
    let result = std::panic::catch_unwind(move || {
        Parser::new(&PostgreSqlDialect {})
            .with_tokens_with_locations(tokens)
            .parse_statements()
    });
    match result {
        Ok(Ok(mut statements)) if statements.len() == 1 => Ok(statements.remove(0)),
        Ok(Ok(statements)) => Err(format!(
            "expected one statement here, the parser read {}",
            statements.len()
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the parser failed on this statement".to_owned()),
    }
}
