//! [`Precision`] and [`ForwardPass`]: how so1s runs a model's forward pass, as flags,
//! `so1s.toml` and metadata name them, and [`CpuFeatures`], which `auto` reads. Plain data,
//! so manifests can be read without the `inference` feature.

use std::sync::OnceLock;

/// The number type of the encoder's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// bf16 where the CPU multiplies bf16 natively ([`CpuFeatures::native_bf16`]) and the
    /// model, measured against f32 as it loads, keeps the accuracy contract in it
    /// (so1s-inference's `accuracy`); f32 elsewhere.
    #[default]
    Auto,
    /// 32-bit floats, as trained: exact.
    F32,
    /// bfloat16 matrix products with f32 accumulation; layer norms, softmax, GELU and
    /// pooling in f32 (what `torch.autocast` does). Fast only on CPUs with native bf16.
    Bf16,
    /// 8-bit integer weights and activations (dynamic quantization), f32 elsewhere.
    Int8,
}

impl Precision {
    /// The name used in flags, manifests and metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }

    /// The precision that runs on `cpu`, and why: `auto` becomes bf16 or f32; the others stay.
    pub fn resolve(self, cpu: &CpuFeatures) -> (Precision, String) {
        match self {
            Precision::Auto if cpu.native_bf16() => (
                Precision::Bf16,
                format!(
                    "precision auto: the CPU multiplies bf16 natively ({})",
                    cpu.bf16_flags().join(", ")
                ),
            ),
            Precision::Auto if cpu.caps.is_empty() => (
                Precision::F32,
                "precision auto: the CPU has no native bf16 (no avx512_bf16 or amx_bf16), so f32"
                    .into(),
            ),
            Precision::Auto => (
                Precision::F32,
                format!(
                    "precision auto: no native bf16 for the kernels ({}), so f32",
                    cpu.caps.join(", ")
                ),
            ),
            explicit => (
                explicit,
                format!("precision {} as asked", explicit.as_str()),
            ),
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "auto" => Ok(Precision::Auto),
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "int8" => Ok(Precision::Int8),
            other => Err(format!(
                "unknown precision {other:?}: use auto, f32, bf16 or int8"
            )),
        }
    }
}

/// Who runs the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardPass {
    /// so1s's own encoder where it covers the model (BERT and ELECTRA embeddings with mean
    /// pooling, and their classifiers), rust-bert for the rest.
    #[default]
    Auto,
    /// so1s's own encoder; a model it does not cover fails to load, saying why.
    So1s,
    /// rust-bert's models (f32 only; no ELECTRA classifier).
    RustBert,
}

impl ForwardPass {
    /// The name used in flags, manifests and metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardPass::Auto => "auto",
            ForwardPass::So1s => "so1s",
            ForwardPass::RustBert => "rust-bert",
        }
    }
}

impl std::str::FromStr for ForwardPass {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "auto" => Ok(ForwardPass::Auto),
            "so1s" => Ok(ForwardPass::So1s),
            "rust-bert" => Ok(ForwardPass::RustBert),
            other => Err(format!(
                "unknown forward pass {other:?}: use auto, so1s or rust-bert"
            )),
        }
    }
}

/// The CPU features the forward pass depends on, from the kernel's CPU flags.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuFeatures {
    flags: Vec<String>,
    /// The kernels' ISA caps in force (`ONEDNN_MAX_CPU_ISA=AVX2`, …), for the summary.
    caps: Vec<String>,
}

/// Flags meaning the CPU multiplies bf16 natively (AVX-512 BF16; AMX tiles).
const BF16_FLAGS: [&str; 2] = ["avx512_bf16", "amx_bf16"];
/// Flags meaning int8 dot products accumulate in 32 bits (VNNI), so 8-bit weights cannot
/// overflow fbgemm's kernel.
const VNNI_FLAGS: [&str; 2] = ["avx512_vnni", "avx_vnni"];
/// oneDNN's ISA levels (`ONEDNN_MAX_CPU_ISA`) that keep its native bf16 kernels.
const ONEDNN_BF16_ISAS: [&str; 8] = [
    "AVX512_CORE_BF16",
    "AVX512_CORE_FP16",
    "AVX512_CORE_AMX",
    "AVX512_CORE_AMX_FP16",
    "AVX10_1_512",
    "AVX10_1_512_AMX",
    "AVX10_1_512_AMX_FP16",
    "ALL",
];
/// The flags worth stating next to a figure.
const REPORTED_FLAGS: [&str; 7] = [
    "avx2",
    "avx512f",
    "avx512_bf16",
    "amx_bf16",
    "avx512_vnni",
    "avx_vnni",
    "amx_int8",
];

impl CpuFeatures {
    /// This machine's: the first `flags` line of `/proc/cpuinfo` (none elsewhere), capped by
    /// the kernels' own ISA settings in the environment ([`CpuFeatures::capped`]). Read once.
    pub fn detect() -> &'static CpuFeatures {
        static DETECTED: OnceLock<CpuFeatures> = OnceLock::new();
        DETECTED.get_or_init(|| {
            let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
            CpuFeatures::from_cpuinfo(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
                .capped(
                    var("ONEDNN_MAX_CPU_ISA")
                        .or_else(|| var("DNNL_MAX_CPU_ISA"))
                        .as_deref(),
                    var("FBGEMM_ENABLE_INSTRUCTIONS").as_deref(),
                )
        })
    }

    /// These features as the kernels will use them when told to stop at an instruction set:
    /// oneDNN (bf16 matrix products) at `onednn` (`ONEDNN_MAX_CPU_ISA`: without
    /// `AVX512_CORE_BF16` or an AMX level, no native bf16) and fbgemm (int8) at `fbgemm`
    /// (`FBGEMM_ENABLE_INSTRUCTIONS`: without `AVX512_E1`, no VNNI). Capping the kernels is
    /// how an operator runs a fast CPU as a slower one; `precision = auto` follows them.
    pub fn capped(mut self, onednn: Option<&str>, fbgemm: Option<&str>) -> Self {
        if let Some(isa) = onednn {
            let bf16 = ONEDNN_BF16_ISAS.iter().any(|i| i.eq_ignore_ascii_case(isa));
            if !bf16 {
                self.flags.retain(|f| !BF16_FLAGS.contains(&f.as_str()));
            }
            self.caps.push(format!("ONEDNN_MAX_CPU_ISA={isa}"));
        }
        if let Some(isa) = fbgemm {
            if !isa.to_ascii_uppercase().starts_with("AVX512_E1") {
                self.flags.retain(|f| !VNNI_FLAGS.contains(&f.as_str()));
            }
            self.caps.push(format!("FBGEMM_ENABLE_INSTRUCTIONS={isa}"));
        }
        self
    }

    /// The features a `/proc/cpuinfo` text lists (its first `flags` line).
    pub fn from_cpuinfo(cpuinfo: &str) -> Self {
        let flags = cpuinfo
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == "flags").then_some(value)
            })
            .unwrap_or("");
        Self::from_flags(flags)
    }

    /// The features of a space-separated flag list.
    pub fn from_flags(flags: &str) -> Self {
        Self {
            flags: flags.split_whitespace().map(str::to_owned).collect(),
            caps: Vec::new(),
        }
    }

    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The CPU multiplies bf16 natively.
    pub fn native_bf16(&self) -> bool {
        !self.bf16_flags().is_empty()
    }

    fn bf16_flags(&self) -> Vec<&'static str> {
        BF16_FLAGS.into_iter().filter(|f| self.has(f)).collect()
    }

    /// int8 dot products accumulate in 32 bits.
    pub fn vnni(&self) -> bool {
        VNNI_FLAGS.iter().any(|f| self.has(f))
    }

    /// The vector flags that matter for speed, for logs and figures (`avx2 avx512_bf16 …`).
    pub fn summary(&self) -> String {
        let present: Vec<&str> = REPORTED_FLAGS.into_iter().filter(|f| self.has(f)).collect();
        let flags = match present.is_empty() {
            true => "no AVX2 or AVX-512".into(),
            false => present.join(" "),
        };
        match self.caps.is_empty() {
            true => flags,
            false => format!("{flags} (kernels capped: {})", self.caps.join(", ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AVX512_HOST: &str =
        "fpu vme sse sse2 avx avx2 fma avx512f avx512dq avx512_vnni avx512_bf16 avx512_vbmi2";
    const AVX2_HOST: &str = "fpu vme sse sse2 avx avx2 fma f16c";
    const SAPPHIRE_RAPIDS: &str = "avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8 avx_vnni";

    #[test]
    fn auto_picks_bf16_exactly_when_the_flags_say_the_cpu_has_it() {
        for (flags, expected, vnni) in [
            (AVX512_HOST, Precision::Bf16, true),
            (SAPPHIRE_RAPIDS, Precision::Bf16, true),
            (AVX2_HOST, Precision::F32, false),
            ("", Precision::F32, false),
            // VNNI without bf16 (Cascade Lake): int8 is fast, bf16 is not.
            ("avx2 avx512f avx512_vnni", Precision::F32, true),
        ] {
            let cpu = CpuFeatures::from_flags(flags);
            let (precision, why) = Precision::Auto.resolve(&cpu);
            assert_eq!(precision, expected, "{flags}: {why}");
            assert_eq!(cpu.vnni(), vnni, "{flags}");
            assert!(why.starts_with("precision auto"), "{why}");
        }
        let (_, why) = Precision::Auto.resolve(&CpuFeatures::from_flags(AVX512_HOST));
        assert!(why.contains("avx512_bf16"), "{why}");
        // An explicit precision stays, whatever the CPU.
        let avx2 = CpuFeatures::from_flags(AVX2_HOST);
        assert_eq!(Precision::Bf16.resolve(&avx2).0, Precision::Bf16);
        assert_eq!(Precision::Int8.resolve(&avx2).0, Precision::Int8);
    }

    #[test]
    fn cpuinfo_is_read_from_its_first_flags_line() {
        let cpuinfo = format!(
            "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {AVX512_HOST}\n\nprocessor\t: 1\nflags\t\t: {AVX2_HOST}\n"
        );
        let cpu = CpuFeatures::from_cpuinfo(&cpuinfo);
        assert!(cpu.native_bf16());
        assert_eq!(cpu.summary(), "avx2 avx512f avx512_bf16 avx512_vnni");
        assert_eq!(
            CpuFeatures::from_cpuinfo("").summary(),
            "no AVX2 or AVX-512"
        );
    }

    #[test]
    fn kernels_capped_at_avx2_make_an_avx512_host_an_avx2_one() {
        let host = || CpuFeatures::from_flags(AVX512_HOST);
        let capped = host().capped(Some("AVX2"), Some("AVX2"));
        assert!(!capped.native_bf16() && !capped.vnni());
        let (precision, why) = Precision::Auto.resolve(&capped);
        assert_eq!(precision, Precision::F32);
        assert!(why.contains("ONEDNN_MAX_CPU_ISA=AVX2"), "{why}");
        assert_eq!(
            capped.summary(),
            "avx2 avx512f (kernels capped: ONEDNN_MAX_CPU_ISA=AVX2, FBGEMM_ENABLE_INSTRUCTIONS=AVX2)"
        );
        // Caps at or above what the features need change nothing but the summary.
        let kept = host().capped(Some("avx512_core_bf16"), Some("AVX512_E1"));
        assert!(kept.native_bf16() && kept.vnni());
        assert_eq!(Precision::Auto.resolve(&kept).0, Precision::Bf16);
        // oneDNN capped below bf16, fbgemm not: int8 keeps VNNI.
        let vnni_only = host().capped(Some("AVX512_CORE_VNNI"), None);
        assert!(!vnni_only.native_bf16() && vnni_only.vnni());
        assert_eq!(host().capped(None, None), host());
    }

    #[test]
    fn names_parse_and_print() {
        for precision in [
            Precision::Auto,
            Precision::F32,
            Precision::Bf16,
            Precision::Int8,
        ] {
            assert_eq!(precision.as_str().parse::<Precision>().unwrap(), precision);
        }
        for pass in [ForwardPass::Auto, ForwardPass::So1s, ForwardPass::RustBert] {
            assert_eq!(pass.as_str().parse::<ForwardPass>().unwrap(), pass);
        }
        assert!("fp8".parse::<Precision>().is_err());
        assert!("onnx".parse::<ForwardPass>().is_err());
    }
}
