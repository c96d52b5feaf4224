"""Train and evaluate a registered method (CTEN, the MART backbone MBT, MART, ...) on VE-8 / Ekman-6 / the demo set.

    python main.py --preset demo                      # CTEN on the built-in demo set
    python main.py --preset cten_ve8_official --root DATA/VE8 --visual-weights r3d101_KM_200ep.pth
    torchrun --nproc_per_node 2 main.py --preset cten_ve8_official --root ...
    python main.py --preset cten_ve8_official --root ... --eval-only --checkpoint runs/cten_ve8_official/best.pth

Model selection uses the validation subset carved from training; the test split is evaluated once, with the
selected checkpoint, on the original video only. A method's options, presets, model and stages (MART: stage1/ then
stage2/) come from its recipe in core/methods/; the run itself is core/run.py. Nothing imports this file.
`--help` alone prints docs/usage.txt (written by `python opts.py`) without importing torch.
"""
import sys
from pathlib import Path

if __name__ == "__main__":
    usage = Path(__file__).resolve().parent / "docs" / "usage.txt"
    if sys.argv[1:] in (["-h"], ["--help"]) and usage.is_file():
        print(usage.read_text(), end="")
        sys.exit(0)
    from core.run import main

    sys.exit(main())
