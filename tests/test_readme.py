"""Every nginx snippet of README.md (and of docs/*.md, if there are any) passes `nginx -t`, with the
nginx and the module under test.

A snippet with an `events` block is a whole nginx.conf and is tested as it is. Any other is a
fragment, placed by what it starts with: `load_module` at the top level; `location` in a server
in http; `server` or `upstream` in http; anything else must say where it goes in its first line
(`# in http {}`, `# in server {}`, `# in location {}`). Each is then made local as the shipped
confs are (nginx-conf/localize.sh: the module's path, /etc/nginx/ and /var/log/nginx/ in a
temporary directory, the Ollama servers on the loopback), with the files the snippets name
(a keys file, an htpasswd file, a state directory) in place."""

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, module_path, nginx_binary

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```nginx[^\n]*\n(.*?)^```", re.M | re.S)
MARKER = re.compile(r"#\s*in (http|server|location) \{\}")


def snippets():
    found = []
    for document in DOCUMENTS:
        text = document.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(pytest.param(match.group(1), id=f"{document.name}:{line}"))
    return found


def first_directive(snippet):
    lines = [l.strip() for l in snippet.splitlines() if l.strip()]
    code = [l for l in lines if not l.startswith("#")]
    return (code[0].split() or [""])[0] if code else "", lines[0] if lines else ""


def whole_conf(snippet):
    """The snippet as a whole nginx.conf, or None for an unmarked fragment."""
    if re.search(r"^\s*events\s*\{", snippet, re.M):
        return snippet
    directive, first_line = first_directive(snippet)
    marker = MARKER.match(first_line)
    context = marker.group(1) if marker else {"load_module": "main", "location": "server", "server": "http",
                                              "upstream": "http"}.get(directive)
    if context is None:
        return None
    load = "" if directive == "load_module" else "load_module modules/ngx_http_ollama_auth_module.so;\n"
    body = snippet
    if context == "location":
        body = f"location / {{\n{body}\n}}\n"
    if context in ("location", "server"):
        body = f"server {{\nlisten 80;\n{body}\n}}\n"
    if context == "main":
        return f"{body}\nevents {{}}\n"
    return f"{load}events {{}}\nhttp {{\n{body}\n}}\n"


@pytest.mark.parametrize("snippet", snippets())
def test_readme_nginx_snippet_passes_nginx_t(snippet):
    conf = whole_conf(snippet)
    assert conf is not None, ("a fragment that does not say where it goes: start it with `# in http {}` "
                              "(or server, location), or make it a whole nginx.conf")
    directory = Path(tempfile.mkdtemp(prefix="ollama-auth-readme-", dir="/tmp"))
    try:
        os.chmod(directory, 0o755)
        # Files and directories that snippets name, where localize.sh puts /etc/nginx/.
        conf = conf.replace("/var/lib/ollama-auth/", f"{directory}/state/")
        (directory / "state").mkdir(mode=0o777)
        os.chmod(directory / "state", 0o777)  # writable by the workers' user, as the README asks
        # A replica or server named by the Docker network: one loopback address each.
        names = sorted(set(re.findall(r"^\s*server ([A-Za-z][\w.-]*):\d+", conf, re.M)) - {"localhost"})
        names = [n for n in names if not re.fullmatch(r"ollama[\w-]*", n)]  # localize.sh's
        for i, name in enumerate(names, 2):
            conf = re.sub(rf"(^\s*server ){re.escape(name)}:", rf"\g<1>127.0.0.{i}:", conf, flags=re.M)
        source = directory / "snippet.conf"
        source.write_text(conf)
        subprocess.run([str(ROOT / "nginx-conf/localize.sh"), str(source), str(directory), module_path(),
                        "127.0.0.1:1", "127.0.0.1:11434"], check=True)
        (directory / "auth").mkdir()
        (directory / "auth/api_keys.txt").write_text("readme-key team\n")
        (directory / "auth/htpasswd").write_text("")
        for path in [directory / "auth", *(directory / "auth").iterdir()]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        result = subprocess.run([nginx_binary(), "-p", str(directory), "-c", str(directory / "nginx.conf"), "-t"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "test is successful" in result.stderr, (
            result.stderr + "\n" + (directory / "nginx.conf").read_text())
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_every_readme_nginx_snippet_is_found():
    """The extraction itself: the README's nginx snippets, each once, and a fragment is placed."""
    found = snippets()
    assert len(found) >= 4, found
    texts = [p.values[0] for p in found]
    assert any("ollama_auth_metrics ollama;" in t for t in texts)
    assert whole_conf("location / { return 200; }").startswith("load_module ")
    assert "http {\nserver {\nlisten 80;\nlocation / {" in whole_conf("# in location {}\nreturn 204;")
    assert whole_conf("ollama_auth_zone z 1m;") is None  # unmarked
