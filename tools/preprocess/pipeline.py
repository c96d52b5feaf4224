"""Turn one video into its frames, audio and transcript (atomically, resumably), and run that over many."""
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from datasets.errors import DataError
from datasets.transcripts import Cue

from .asr import SAMPLE_RATE, transcribe
from .audio import decode_audio, write_audio
from .guard import die_with_parent
from .layout import Paths, Video, finished, saved_settings, source_stamp, video_paths
from .subtitles import clip_cues, embedded_subtitles, format_srt, read_sidecar
from .vad import speech_regions
from .video import extract_frames

NO_AUDIO = ("frames were extracted and no audio file was written; "
            "the loader's missing-audio policy decides what this video gets")
# Settings that only decide how a transcript is recognised: a finished video made with other values is kept (its
# frames, audio and transcript are valid outputs); --force redoes it.
TRANSCRIPT_SETTINGS = ("asr", "whisper_model")


@dataclass
class Result:
    video: Video
    status: str  # "processed" | "skipped" | "failed"
    warnings: list[str] = field(default_factory=list)
    failed_file: str = ""
    why: str = ""
    fix: str = ""
    no_speech: str = ""  # why the video got no transcript when it simply has no speech (not a warning)
    changed: dict = field(default_factory=dict)  # {setting: [saved, now]}: a finished video redone ("processed")
    # or kept ("skipped", transcript settings only) although made with other settings


def find_transcript(video: Video, samples, settings: dict, warnings: list[str],
                    no_speech: list[str]) -> tuple[list[Cue], str | None]:
    """Cues and their source: a sidecar .srt beside the video, else an embedded text subtitle stream,
    else speech recognition (settings["asr"]) on the audio. samples: int16 (C, N) or None. A video in which no
    speech is found gets a line in `no_speech` (a fact about the clip, not a warning)."""
    sidecar = video.src.with_suffix(".srt")
    if sidecar.is_file():
        cues = read_sidecar(sidecar, warnings)
        if cues:
            return cues, "sidecar"
        warnings.append(f"the sidecar {sidecar.name} is empty and was ignored")
    cues = embedded_subtitles(video.src)
    if cues:
        return cues, "embedded"
    if settings["asr"] == "none" or samples is None or samples.shape[1] == 0:
        return [], None
    if settings["sample_rate"] == SAMPLE_RATE and settings["channels"] == 1:
        mono = samples[0]
    else:
        mono = decode_audio(video.src, SAMPLE_RATE, 1)[0][0]
    regions = speech_regions(mono, SAMPLE_RATE)
    if not regions:
        no_speech.append(f"the voice-activity check found no speech ({settings['asr']} not run, no .srt)")
        return [], None
    whisper_model = Path(settings["whisper_model"]) if settings["whisper_model"] else None
    cues = transcribe(mono, settings["asr"], whisper_model, regions)
    if not cues:
        no_speech.append(f"{settings['asr']} recognised no speech (no .srt)")
    return cues, settings["asr"]


def _build(video: Video, paths: Paths, settings: dict) -> tuple[list[str], str]:
    """Write everything under paths.tmp, then move it into place; the record goes last. Returns the warnings and
    why the video has no transcript when it has no speech ('' otherwise)."""
    paths.record.unlink(missing_ok=True)
    shutil.rmtree(paths.tmp, ignore_errors=True)
    frames_tmp = paths.tmp / "frames"
    frames_tmp.mkdir(parents=True)
    n_frames, fps, warnings = extract_frames(video.src, frames_tmp, settings["short_side"], settings["jpeg_quality"])
    (frames_tmp / "n_frames").write_text(str(n_frames))
    (frames_tmp / "fps").write_text(str(round(fps, 6)))

    samples, audio_warnings = decode_audio(video.src, settings["sample_rate"], settings["channels"])  # (C, N)
    warnings += audio_warnings
    audio_tmp = None
    if samples is None:
        warnings.append("no audio stream: " + NO_AUDIO)
    elif samples.shape[1] == 0:
        warnings.append("the audio stream has no decodable sample: " + NO_AUDIO)
    else:
        audio_tmp = paths.tmp / f"audio.{settings['audio_format']}"
        write_audio(samples, settings["sample_rate"], audio_tmp)

    no_speech: list[str] = []
    cues, transcript = find_transcript(video, samples, settings, warnings, no_speech)
    cues, clipped = clip_cues(cues, n_frames / fps)
    if clipped:
        warnings.append(clipped)
    srt_tmp = None
    if cues:
        srt_tmp = paths.tmp / "transcript.srt"
        srt_tmp.write_text(format_srt(cues), encoding="utf-8")

    if paths.frames.exists():
        shutil.rmtree(paths.frames)
    paths.frames.parent.mkdir(parents=True, exist_ok=True)
    frames_tmp.rename(paths.frames)
    for audio_path in paths.audio.values():
        audio_path.unlink(missing_ok=True)
    if audio_tmp is not None:
        target = paths.audio[settings["audio_format"]]
        target.parent.mkdir(parents=True, exist_ok=True)
        audio_tmp.replace(target)
    paths.srt.unlink(missing_ok=True)
    if srt_tmp is not None:
        paths.srt.parent.mkdir(parents=True, exist_ok=True)
        srt_tmp.replace(paths.srt)

    record = {"source": source_stamp(video.src), "settings": settings, "n_frames": n_frames, "fps": fps,
              "audio": audio_tmp is not None, "transcript": transcript if srt_tmp is not None else None,
              "warnings": warnings, "no_speech": "".join(no_speech)}
    paths.record.parent.mkdir(parents=True, exist_ok=True)
    record_tmp = paths.tmp / "record.json"
    record_tmp.write_text(json.dumps(record, indent=1))
    record_tmp.replace(paths.record)
    return warnings, "".join(no_speech)


def process_video(video: Video, root: Path, settings: dict, force: bool = False) -> Result:
    """Process one video unless it is already finished (also when only TRANSCRIPT_SETTINGS differ: kept, and said
    in Result.changed); never raises for bad input (see Result)."""
    saved = None if force else saved_settings(video, root)
    changed = {k: [saved.get(k), settings.get(k)] for k in {*saved, *settings}
               if saved.get(k) != settings.get(k)} if saved is not None else {}
    if saved is not None and set(changed) <= set(TRANSCRIPT_SETTINGS) and finished(video, root, saved):
        return Result(video, "skipped", changed=changed)
    paths = video_paths(root, video.label, video.video_id)
    try:
        warnings, no_speech = _build(video, paths, settings)
        return Result(video, "processed", warnings, no_speech=no_speech, changed=changed)
    except DataError as e:
        return Result(video, "failed", failed_file=e.path, why=e.why, fix=e.fix)
    except OSError as e:
        return Result(video, "failed", failed_file=str(e.filename or video.src), why=f"{type(e).__name__}: {e}",
                      fix=f"check that {root} is writable and has free space, then run again")
    except Exception as e:  # an FFmpeg or library failure not foreseen: keep the other videos going
        return Result(video, "failed", failed_file=str(video.src), why=f"unexpected {type(e).__name__}: {e}",
                      fix="run this video alone with --workers 1 and report the message")
    finally:
        shutil.rmtree(paths.tmp, ignore_errors=True)


def process_all(videos: list[Video], root: Path, settings: dict, workers: int, force: bool) -> list[Result]:
    """Results in the order of `videos`; a process pool when workers > 1, with a tqdm progress bar."""
    results: list[Result | None] = [None] * len(videos)
    with tqdm(total=len(videos), unit="video", desc="preprocess", dynamic_ncols=True) as bar:
        if workers <= 1:
            for i, video in enumerate(videos):
                results[i] = process_video(video, root, settings, force)
                bar.update()
            return results
        with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(process_video, v, root, settings, force): i for i, v in enumerate(videos)}
            for future in as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except BrokenProcessPool:
                    results[i] = Result(videos[i], "failed", failed_file=str(videos[i].src),
                                        why="a worker process died (crash or out of memory) while this video was queued or running",
                                        fix="run again (finished videos are skipped); with --workers 1 the failing file shows")
                bar.update()
    return results

