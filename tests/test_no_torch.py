"""The bitstream layer and the model-free tools must work without torch."""
import subprocess
import sys


def test_bitstream_probe_and_prompt_dump_do_not_import_torch():
    code = (
        "import sys\n"
        "import libpromptus.bitstream, libpromptus.bitstream.entropy, libpromptus.bitstream.probe\n"
        "import libpromptus.decoder.prompt_dump, libpromptus.cli.pmtprobe, libpromptus.cli.pmtdec, libpromptus.cli.pmtenc\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not loaded, loaded[:5]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
