"""Evaluating Promptus against conventional codecs (`pmteval`).

One module per job:

- `clip`: the frames every codec encodes (read once, with pmtenc's reader and options);
- `metrics`: per-frame PSNR, SSIM, MS-SSIM and LPIPS, the "severely distorted" rule;
- `codecs`: the `Codec` interface; `baselines`: x265, x264, SVT-AV1 and VP9 through
  PyAV; `promptus`: Promptus through `libpromptus.api`; `registry`: codecs by name;
- `ratematch`: the search that lands each baseline file on its target bitrate;
- `runner`: every codec at every bitrate, one resumable JSON record per run;
- `rd`: BD-rate; `report`: the summaries (JSON and Markdown); `plots`: the figures;
- `traces`: throughput traces (shipped synthetic 2G/3G/4G, files, Mahimahi);
  `abr`: the trace-driven streaming simulation with a buffer-based ABR.
"""
