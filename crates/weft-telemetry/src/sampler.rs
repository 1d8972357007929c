//! `SamplerConfig`: which traces are kept, from `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG`, and the SDK sampler it stands for. Both the
//! trace pipeline (`traces`) and the row spans (`spans`, which decide a
//! run's sampling themselves) read it.

use opentelemetry_sdk::trace::Sampler;

use crate::Error;

/// Which traces are kept (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerConfig {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

impl SamplerConfig {
    /// Parses the standard sampler names; the ratio defaults to 1.0.
    pub fn parse(name: &str, arg: Option<&str>) -> Result<SamplerConfig, Error> {
        let ratio = || -> Result<f64, Error> {
            match arg.map(str::trim).filter(|a| !a.is_empty()) {
                None => Ok(1.0),
                Some(text) => match text.parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => Err(Error::SamplerRatio(text.to_owned())),
                },
            }
        };
        Ok(match name.trim() {
            "always_on" => SamplerConfig::AlwaysOn,
            "always_off" => SamplerConfig::AlwaysOff,
            "traceidratio" => SamplerConfig::TraceIdRatio(ratio()?),
            "parentbased_always_on" | "" => SamplerConfig::ParentBasedAlwaysOn,
            "parentbased_always_off" => SamplerConfig::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => SamplerConfig::ParentBasedTraceIdRatio(ratio()?),
            other => return Err(Error::Sampler(other.to_owned())),
        })
    }

    pub(crate) fn sampler(self) -> Sampler {
        match self {
            SamplerConfig::AlwaysOn => Sampler::AlwaysOn,
            SamplerConfig::AlwaysOff => Sampler::AlwaysOff,
            SamplerConfig::TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
            SamplerConfig::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            SamplerConfig::ParentBasedAlwaysOff => {
                Sampler::ParentBased(Box::new(Sampler::AlwaysOff))
            }
            SamplerConfig::ParentBasedTraceIdRatio(r) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
            }
        }
    }
}
