"""`pulse align`: real photos in, FFHQ-aligned face crops out, as PULSE's own aligner makes them.

- `detect`: dlib's HOG detector and 68-point landmarks (the optional `align` extra), model file location.
- `identity`: dlib's face descriptor on results, and how many people an input's samples are (`--check-face`).
- `ffhq`: the FFHQ alignment (NVIDIA's ffhq-dataset procedure, as PULSE's `shape_predictor.py` runs it).
- `sizes`: the aligned size and the crop sizes `--size` takes (checked before anything heavy is imported).
- `run`: a folder of photos to crops and `faces.jsonl` (`align_photos`), resumable.

Nothing here is imported by `pulse --help`; dlib is imported only when a detector is made.
"""
