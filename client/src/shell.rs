//! Splitting a command line into argv the way a POSIX shell would (without expansions),
//! and joining argv back for display.

use crate::container::InputError;

/// Splits `text` into words like `sh` does: whitespace separates words, single quotes
/// keep everything literally, double quotes keep everything except `\"`, `\\`, `\$` and
/// `` \` `` escapes, and a backslash outside quotes escapes the next character.
///
/// No variables, globs or substitutions are expanded: the words go to the container as
/// they are, as `python-zunclient` does with `shlex.split`.
pub fn split(text: &str) -> Result<Vec<String>, InputError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word exists once any character (or an empty pair of quotes) has been seen.
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(unterminated(text, "single")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(unterminated(text, "double")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(unterminated(text, "double")),
                    }
                }
            }
            '\\' => match chars.next() {
                // A backslash before a newline joins lines, as in a shell script.
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => {
                    return Err(InputError::new(format!(
                        "invalid command {text:?}: it ends with a lone backslash"
                    )))
                }
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn unterminated(text: &str, kind: &str) -> InputError {
    InputError::new(format!(
        "invalid command {text:?}: a {kind} quote is not closed"
    ))
}

/// Joins argv into one line that [`split`] turns back into the same argv, quoting only
/// the words that need it.
pub fn join<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r#"'\''"#))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        split(text).unwrap()
    }

    #[test]
    fn plain_words_are_split_on_whitespace() {
        assert_eq!(words("/usr/sbin/sshd -D"), ["/usr/sbin/sshd", "-D"]);
        assert_eq!(words("  a \t b\n c  "), ["a", "b", "c"]);
        assert!(words("").is_empty());
        assert!(words("   ").is_empty());
    }

    #[test]
    fn single_quotes_keep_their_content_literally() {
        assert_eq!(
            words(r#"sh -c 'echo "hi" $HOME \n'"#),
            ["sh", "-c", r#"echo "hi" $HOME \n"#]
        );
    }

    #[test]
    fn double_quotes_honour_only_the_shell_escapes() {
        assert_eq!(
            words(r#"echo "a \"b\" \$c \\ \n""#),
            ["echo", r#"a "b" $c \ \n"#]
        );
    }

    #[test]
    fn quoted_parts_join_adjacent_text_into_one_word() {
        assert_eq!(words(r#"a'b c'"d e"f"#), ["ab cd ef"]);
        assert_eq!(words("echo '' \"\""), ["echo", "", ""]);
    }

    #[test]
    fn backslash_outside_quotes_escapes_the_next_character() {
        assert_eq!(words(r"a\ b c\'d"), ["a b", "c'd"]);
        assert_eq!(words("a \\\nb"), ["a", "b"]);
    }

    #[test]
    fn unterminated_quotes_and_trailing_backslash_are_errors() {
        assert!(split("echo 'hi")
            .unwrap_err()
            .to_string()
            .contains("single quote"));
        assert!(split("echo \"hi")
            .unwrap_err()
            .to_string()
            .contains("double quote"));
        assert!(split("echo \\")
            .unwrap_err()
            .to_string()
            .contains("backslash"));
    }

    #[test]
    fn join_quotes_only_where_needed_and_round_trips() {
        let argv = ["sh", "-c", "echo 'hi' there", "", "a=b"];
        let line = join(&argv);
        assert_eq!(line, r#"sh -c 'echo '\''hi'\'' there' '' a=b"#);
        assert_eq!(split(&line).unwrap(), argv);
    }
}
