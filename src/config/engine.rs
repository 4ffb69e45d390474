//! The engine choice: where validate's and transform's plans run.

/// Where validate's and transform's plans run: in this process (the default), or
/// on a DataFusion Ballista cluster (`engine: ballista://host:port` in the config,
/// or `--engine`), whose scheduler is `pipeline cluster scheduler`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Engine {
    #[default]
    InProcess,
    /// The scheduler's `host:port`.
    Ballista(String),
}

impl TryFrom<String> for Engine {
    type Error = String;

    fn try_from(text: String) -> Result<Engine, String> {
        Engine::parse(&text)
    }
}

impl Engine {
    pub fn parse(text: &str) -> Result<Engine, String> {
        let text = text.trim();
        if text.is_empty() || text == "in-process" {
            return Ok(Engine::InProcess);
        }
        let address = text.strip_prefix("ballista://").ok_or_else(|| {
            format!("engine `{text}` is neither `in-process` nor `ballista://host:port`")
        })?;
        match address.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Engine::Ballista(address.to_owned()))
            }
            _ => Err(format!(
                "engine `{text}`: expected ballista://host:port, e.g. ballista://scheduler:50050"
            )),
        }
    }

    /// What a binary built without the `ballista` feature says of `ballista://`.
    pub const NOT_BUILT: &str = "this pipeline binary was built without Ballista: build it with \
         `cargo build --release --features ballista` to use engine ballista://";
}

#[cfg(test)]
mod tests {
    use super::Engine;

    #[test]
    fn engines_parse_from_their_urls() {
        assert_eq!(Engine::parse("").unwrap(), Engine::InProcess);
        assert_eq!(Engine::parse("in-process").unwrap(), Engine::InProcess);
        assert_eq!(
            Engine::parse("ballista://sched.internal:50050").unwrap(),
            Engine::Ballista("sched.internal:50050".into())
        );
        for bad in [
            "ballista://",
            "ballista://host",
            "ballista://:50050",
            "spark://x:1",
            "ballista://h:99999",
        ] {
            assert!(Engine::parse(bad).is_err(), "{bad}");
        }
    }
}
