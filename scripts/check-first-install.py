#!/usr/bin/env python3
"""The documented first install, checked offline (scripts/check-deploy.sh runs it).

A newcomer builds the image with the README's `docker build` command, loads it into a local
cluster and runs `helm install` with no values. That works only while:
  * the tag the README builds is the image the chart renders by default (and compose's and
    the Makefile's `docker-build`);
  * the chart's appVersion is the crate's version (the default tag);
  * the Dockerfile builds the crate's binary, runs it as a non-root user, and its build context
    (.dockerignore, an allowlist) holds every file the crate reads at compile time;
  * the chart's default JWT issuer is the service's, so `commerce token` tokens are accepted.
No Docker engine runs here, so the image itself is not built: these are the facts it rests on.
"""
import fnmatch
import glob
import os
import re
import sys

import yaml

errors = []


def fail(message):
    errors.append(message)


def read(path):
    with open(path) as f:
        return f.read()


def rendered_images(path):
    images = set()
    for doc in yaml.safe_load_all(read(path)):
        if not doc or doc.get("kind") not in ("Deployment", "Job"):
            continue
        for c in doc["spec"]["template"]["spec"]["containers"]:
            images.add(c["image"])
    return images


def dockerignore_allows(patterns, path):
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    allowed = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        regex = re.escape(pat).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, p) for p in prefixes):
            allowed = negate
    return allowed


def compile_time_inputs():
    """Files the crate reads while compiling: include_*!, sqlx::migrate!, build.rs's inputs."""
    inputs = {"Cargo.toml", "Cargo.lock", "build.rs"}
    for source in glob.glob("src/**/*.rs", recursive=True):
        text = read(source)
        for m in re.finditer(r'include_(?:str|bytes)!\(\s*"([^"]+)"\s*\)', text):
            inputs.add(os.path.normpath(os.path.join(os.path.dirname(source), m.group(1))))
        for m in re.finditer(r'sqlx::migrate!\(\s*"([^"]+)"\s*\)', text):
            inputs.add(os.path.normpath(m.group(1)))
    for m in re.finditer(r'rerun-if-changed=([^"\s]+)', read("build.rs")):
        inputs.add(os.path.normpath(m.group(1)))
    return sorted(inputs)


def main():
    default_render = sys.argv[1]
    readme = read("README.md")
    cargo = read("Cargo.toml")
    chart = yaml.safe_load(read("helm/commerce/Chart.yaml"))
    values = yaml.safe_load(read("helm/commerce/values.yaml"))
    compose = yaml.safe_load(read("compose.yaml"))
    dockerfile = read("Dockerfile")

    version = re.search(r'(?m)^version\s*=\s*"([^"]+)"', cargo).group(1)
    if str(chart["appVersion"]) != version:
        fail(f"Chart appVersion {chart['appVersion']!r} is not the crate's version {version!r}")

    builds = set(re.findall(r"docker build -t (\S+) \.", readme))
    if len(builds) != 1:
        fail(f"README should build the image with one tag, found {sorted(builds) or 'none'}")
    built = next(iter(builds), "")
    images = rendered_images(default_render)
    if images != {built}:
        fail(f"the chart's default image {sorted(images)} is not what README's build makes ({built!r})")
    makefile_image = re.search(r"(?m)^IMAGE \?= (\S+)", read("Makefile"))
    if not makefile_image or makefile_image.group(1) != built:
        fail(f"the Makefile's IMAGE is not what README's build makes ({built!r})")
    if compose["x-commerce-image"]["image"] != built:
        fail(f"compose runs {compose['x-commerce-image']['image']!r}, README builds {built!r}")
    for m in re.findall(r"(?:kind load docker-image|minikube image load|k3d image import) (\S+)", readme):
        if m != built:
            fail(f"README loads {m!r} into the cluster but builds {built!r}")
    if values["image"].get("pullPolicy") not in ("IfNotPresent", "Never"):
        fail("image.pullPolicy must let a locally loaded image be used (IfNotPresent)")

    bins = re.findall(r'\[\[bin\]\]\s*name\s*=\s*"([^"]+)"', cargo)
    for binary in bins:
        if f"--bin {binary}" not in dockerfile or f'ENTRYPOINT ["{binary}"]' not in dockerfile:
            fail(f"the Dockerfile should build and run the crate's binary {binary!r}")
    user = re.findall(r"(?m)^USER\s+(\S+)", dockerfile)
    if not user or user[-1].split(":")[0] in ("0", "root"):
        fail("the Dockerfile's runtime stage must set a non-root USER")
    if re.search(r"(?i)\bprotoc\b", re.sub(r"(?m)#.*$", "", dockerfile)):
        fail("the Dockerfile installs or runs protoc: build.rs uses protox")
    patterns = [line.strip() for line in read(".dockerignore").splitlines() if line.strip() and not line.startswith("#")]
    for path in compile_time_inputs():
        if not os.path.exists(path):
            fail(f"the crate reads {path} at compile time, but it does not exist")
        elif not dockerignore_allows(patterns, path):
            fail(f".dockerignore leaves out {path}, which the crate reads at compile time")

    service_issuer = None
    for source in glob.glob("src/config*.rs") + glob.glob("src/config/**/*.rs", recursive=True):
        m = re.search(r'"JWT_ISSUER",\s*"([^"]+)"', read(source))
        if m:
            service_issuer = m.group(1)
    if service_issuer is None:
        fail("no JWT_ISSUER default found in src/config")
    elif values["auth"]["issuer"] != service_issuer:
        fail(f"the chart's auth.issuer {values['auth']['issuer']!r} is not the service's JWT_ISSUER default {service_issuer!r}")

    if errors:
        print("\n".join(["FAILED:"] + errors), file=sys.stderr)
        sys.exit(1)
    print(f"  image {built} (README build = chart default = compose = Makefile); issuer {service_issuer}; "
          f"{len(compile_time_inputs())} compile-time inputs in the Docker context")


if __name__ == "__main__":
    main()
