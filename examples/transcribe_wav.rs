//! Transcribes a WAV file with the same Whisper engine the rooms use.
//!
//! `cargo run --release --example transcribe_wav -- file.wav [--model PATH] [--threads N]`
//!
//! Any WAV hound reads (8/16/24/32-bit integer or 32-bit float, any rate, any channel count)
//! is mixed to mono and resampled to 16 kHz. Without `--model`, tiny.en is installed into
//! `$CONCLAVE_MODEL_CACHE` or `~/.cache/conclave-models` on first use.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use conclave_media::transcribe::{Transcriber, WhisperTranscriber};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

const WHISPER_RATE: u32 = 16_000;

struct Args {
    wav: PathBuf,
    model: Option<PathBuf>,
    threads: usize,
}

fn parse_args() -> Result<Args, String> {
    let usage = "usage: transcribe_wav FILE.wav [--model PATH] [--threads N]";
    let mut args = std::env::args_os().skip(1);
    let (mut wav, mut model, mut threads) = (None, None, 2);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--model") => model = Some(args.next().ok_or(usage)?.into()),
            Some("--threads") => {
                let n = args.next().ok_or(usage)?;
                threads = n.to_str().and_then(|n| n.parse().ok()).ok_or(usage)?;
            }
            Some("-h" | "--help") => return Err(usage.into()),
            _ if wav.is_none() => wav = Some(PathBuf::from(arg)),
            _ => return Err(usage.into()),
        }
    }
    Ok(Args {
        wav: wav.ok_or(usage)?,
        model,
        threads,
    })
}

/// Reads the file as mono f32 in -1..=1, returning it with its sample rate.
fn read_mono(path: &PathBuf) -> Result<(Vec<f32>, u32), String> {
    let mut reader =
        hound::WavReader::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let spec = reader.spec();
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<_, _>>(),
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|s| s as f32 * scale))
                .collect()
        }
    }
    .map_err(|e| format!("{}: {e}", path.display()))?;
    let channels = usize::from(spec.channels.max(1));
    let mono = interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect();
    Ok((mono, spec.sample_rate))
}

/// Band-limited resampling to 16 kHz (rubato's FFT resampler filters out everything above
/// the new Nyquist frequency, which naive decimation would fold back into speech).
fn to_16k(pcm: Vec<f32>, rate: u32) -> Result<Vec<f32>, String> {
    if rate == WHISPER_RATE || pcm.is_empty() {
        return Ok(pcm);
    }
    let mut resampler = Fft::<f32>::new(
        rate as usize,
        WHISPER_RATE as usize,
        1024,
        1,
        FixedSync::Input,
    )
    .map_err(|e| format!("cannot resample from {rate} Hz: {e}"))?;
    let input = InterleavedSlice::new(&pcm[..], 1, pcm.len()).map_err(|e| e.to_string())?;
    let output = resampler
        .process_all(&input, pcm.len(), None)
        .map_err(|e| e.to_string())?;
    Ok(output.take_data())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let (pcm, rate) = read_mono(&args.wav)?;
    let pcm = to_16k(pcm, rate)?;
    let seconds = pcm.len() as f64 / f64::from(WHISPER_RATE);

    let model = match args.model {
        Some(path) => path,
        None => {
            let cache = match std::env::var_os("CONCLAVE_MODEL_CACHE") {
                Some(dir) => PathBuf::from(dir),
                None => PathBuf::from(std::env::var_os("HOME").ok_or("set HOME or --model")?)
                    .join(".cache/conclave-models"),
            };
            conclave_model::install(&cache).map_err(|e| e.to_string())?
        }
    };
    let started = Instant::now();
    let whisper = WhisperTranscriber::load(&model, args.threads).map_err(|e| e.to_string())?;
    let load = started.elapsed();

    let started = Instant::now();
    let text = whisper.transcribe(&pcm).map_err(|e| e.to_string())?;
    let busy = started.elapsed().as_secs_f64();
    println!("{text}");
    eprintln!(
        "{seconds:.2} s of audio ({rate} Hz source) in {busy:.2} s with {} threads: \
         real-time factor {:.3} (model load {:.2} s)",
        args.threads,
        busy / seconds.max(f64::EPSILON),
        load.as_secs_f64()
    );
    Ok(())
}
