//! `data synth`.

use std::io::Write;

use anyhow::{bail, Context};
use mlcore_market::civil;
use mlcore_research::dataset::{self, DatasetIndex, INDEX_FILE};
use mlcore_research::synth::{Generator, SynthSpec};

use crate::cli::SynthArgs;

/// Generates the synthetic market into `args.out`.
pub fn synth(args: &SynthArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let start_day =
        civil::parse(&args.start).with_context(|| format!("--start `{}` is not YYYY-MM-DD", args.start))?;
    let spec = SynthSpec {
        seed: args.seed,
        symbols: args.symbols,
        start_day,
        days: args.days,
        interval_ms: args.interval_ms,
        effect: args.effect,
    };
    spec.validate()?;
    if args.out.join(INDEX_FILE).exists() {
        bail!(
            "{} already holds a dataset; choose another --out",
            args.out.display()
        );
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let names = spec.symbol_names();
    let mut gen = Generator::new(spec.clone())?;
    let mut partitions = Vec::new();
    for day in spec.trading_days() {
        let date = civil::format(day);
        for (i, quotes) in gen.day(day).into_iter().enumerate() {
            partitions.push(dataset::write_partition(&args.out, names[i], &date, &quotes)?);
        }
        writeln!(
            out,
            "wrote {date}: {} symbols x {} quotes",
            names.len(),
            spec.steps_per_day()
        )?;
    }
    let rows: u64 = partitions.iter().map(|p| p.rows).sum();
    let index = DatasetIndex {
        format: 1,
        source: format!(
            "synthetic seed={} interval_ms={} effect={}",
            spec.seed, spec.interval_ms, spec.effect
        ),
        symbols: names.iter().map(|s| (*s).to_owned()).collect(),
        interval_ms: spec.interval_ms,
        partitions,
    };
    index.write(&args.out)?;
    writeln!(
        out,
        "dataset ready: {} ({} partitions, {rows} quotes)",
        args.out.display(),
        index.partitions.len()
    )?;
    Ok(0)
}
