//! Pipeline files: TOML `kind = "export" | "reverse"` with `${VAR}` interpolation, typed with serde, errors as `file:line:col: message`.
