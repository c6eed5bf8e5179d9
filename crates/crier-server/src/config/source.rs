//! Reading a configuration file: picking the format from the extension,
//! deserializing straight from the format's own parser (so errors keep their
//! line and column), recording the key path of every error, and collecting
//! unknown keys as warnings instead of failing on them.
//!
//! This module must never apply environment variables or validate values;
//! it only turns text into a [`Config`].

use std::path::Path;

use serde::Deserializer;

use super::{Config, ConfigError, Warning, WarningKind};

/// A configuration file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.toml`
    Toml,
    /// `.json`
    Json,
    /// `.yaml` or `.yml`
    Yaml,
}

impl Format {
    /// The format a file name's extension names, if any.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "toml" => Some(Format::Toml),
            "json" => Some(Format::Json),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

pub(super) fn read_file(path: &Path) -> Result<(Config, Vec<Warning>), ConfigError> {
    let format = Format::from_path(path).ok_or_else(|| ConfigError::UnknownFormat {
        path: path.to_path_buf(),
    })?;
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(&text, format, &path.display().to_string())
}

pub(super) fn parse_str(
    text: &str,
    format: Format,
    file: &str,
) -> Result<(Config, Vec<Warning>), ConfigError> {
    // An empty file is a valid (default) configuration in every format, even
    // though an empty JSON document is not valid JSON.
    if text.trim().is_empty() {
        return Ok((Config::default(), Vec::new()));
    }
    let mut unknown = Vec::new();
    let config = match format {
        Format::Json => parse_json(text, file, &mut unknown)?,
        Format::Toml => parse_toml(text, file, &mut unknown)?,
        Format::Yaml => parse_yaml(text, file, &mut unknown)?,
    };
    let warnings = unknown
        .into_iter()
        .map(|key| Warning {
            kind: WarningKind::UnknownKey,
            message: super::keys::explain(&key),
            key,
        })
        .collect();
    Ok((config, warnings))
}

/// Deserializes a [`Config`] from `de`, tracking the path of any error and
/// pushing the path of every ignored key into `unknown`.
fn deserialize<'de, D: Deserializer<'de>>(
    de: D,
    unknown: &mut Vec<String>,
) -> Result<Config, serde_path_to_error::Error<D::Error>> {
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(&path));
    serde_path_to_error::deserialize(serde_ignored::Deserializer::new(de, &mut record))
}

/// Renders an ignored key's path the way error paths are rendered:
/// `channel.namespaces[0].foo`.
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => {
            let parent = ignored_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}

/// The key path serde_path_to_error recorded, or `""` at the root.
fn key_of<E>(err: &serde_path_to_error::Error<E>) -> String {
    // `?` marks a segment the parser could not name (a syntax error after a
    // key); the known prefix is still the most useful pointer.
    let path = err.path().to_string();
    let path = path.trim_end_matches(".?").trim_end_matches('?');
    if path == "." {
        String::new()
    } else {
        path.to_string()
    }
}

fn parse_json(text: &str, file: &str, unknown: &mut Vec<String>) -> Result<Config, ConfigError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let config = deserialize(&mut de, unknown).map_err(|err| {
        let key = key_of(&err);
        let inner = err.into_inner();
        json_error(file, key, &inner)
    })?;
    de.end().map_err(|err| json_error(file, String::new(), &err))?;
    Ok(config)
}

fn json_error(file: &str, key: String, err: &serde_json::Error) -> ConfigError {
    // serde_json appends " at line L column C" to its messages; the position
    // is reported separately.
    let message = err.to_string();
    let message = match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    ConfigError::Parse {
        file: file.to_string(),
        key,
        line: (err.line() > 0).then_some(err.line()),
        column: (err.column() > 0).then_some(err.column()),
        message,
    }
}

fn parse_toml(text: &str, file: &str, unknown: &mut Vec<String>) -> Result<Config, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|err| toml_error(text, file, String::new(), &err))?;
    deserialize(de, unknown).map_err(|err| {
        let key = key_of(&err);
        toml_error(text, file, key, err.inner())
    })
}

fn toml_error(text: &str, file: &str, key: String, err: &toml::de::Error) -> ConfigError {
    let (line, column) = match err.span() {
        Some(span) => {
            let (l, c) = line_column(text, span.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    ConfigError::Parse {
        file: file.to_string(),
        key,
        line,
        column,
        message: err.message().trim().to_string(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn parse_yaml(text: &str, file: &str, unknown: &mut Vec<String>) -> Result<Config, ConfigError> {
    let de = serde_norway::Deserializer::from_str(text);
    deserialize(de, unknown).map_err(|err| {
        let key = key_of(&err);
        let inner = err.into_inner();
        let location = inner.location();
        // serde_norway appends " at line L column C" like serde_json does.
        let message = inner.to_string();
        let message = match message.find(" at line ") {
            Some(i) => message[..i].to_string(),
            None => message,
        };
        // The key path is already shown; drop serde_norway's own "key: " prefix.
        let message = match message.strip_prefix(&format!("{key}: ")) {
            Some(rest) if !key.is_empty() => rest.to_string(),
            _ => message,
        };
        ConfigError::Parse {
            file: file.to_string(),
            key,
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            message,
        }
    })
}
