"""Generate a synthetic catalog of N services and M checks as a git repository (for benchmarks).

    python3 bench/generate_catalog.py DIR [--services 10000] [--checks 50] [--seed 1] [--folders 0] [--backstage]

Services get owners, types, tags, meta and up to three dependencies on earlier services (so there
is no cycle); checks use every targeting form (all, none, a list of slugs, a selector) and every
frequency, cron schedules and timeouts included. DIR becomes a git repository with one commit on
`main`. Services sit in services/ itself, or with --folders N spread over N sub-folders (as a large
catalog may be organised by team): git's cost of a one-file commit grows with the folder's size.
With --backstage the same services are Backstage Component descriptors, each in its own
`components/<slug>/catalog-info.yaml`, as an organisation that runs Backstage keeps them.
"""

from __future__ import annotations

import argparse
import random
import subprocess
from pathlib import Path

TYPES = ["web", "worker", "database", "queue", "cron", "library"]
TAGS = ["pci", "tier-1", "tier-2", "tier-3", "gdpr", "edge", "internal", "legacy", "batch", "ml"]
FREQUENCIES = ["hourly", "daily", "weekly", "ad-hoc"]
GIT_IDENTITY = ["-c", "user.name=Catalog Bench", "-c", "user.email=bench@example.invalid"]


def service_slug(index: int) -> str:
    return f"service-{index:05d}"


def service_path(index: int, folders: int = 0) -> str:
    """Where service `index` lives, relative to the catalog root."""
    folder = f"group-{index % folders:03d}/" if folders else ""
    return f"services/{folder}{service_slug(index)}.yaml"


def service_yaml(index: int, rng: random.Random) -> str:
    slug = service_slug(index)
    kind = rng.choice(TYPES)
    team = f"team-{rng.randrange(40):02d}"
    tags = sorted(rng.sample(TAGS, rng.randrange(0, 4)))
    dependencies = sorted({service_slug(rng.randrange(index)) for _ in range(rng.randrange(0, 4))}) if index else []
    lines = [
        "# yaml-language-server: $schema=../schemas/service.schema.json",
        f"name: Service {index:05d} {kind.title()}",
        f"slug: {slug}",
        f"priority: {rng.randint(1, 10)}",
        f"type: {kind}",
        f"owner: {team}",
        f"repository: acme/{slug}",
        f"description: The {kind} that handles part {index} of the business. Owned by {team}.",
    ]
    if index % 97 == 0:
        lines.append("active: false")
    lines.append(f"tags: [{', '.join(tags)}]")
    lines.append(f"dependencies: [{', '.join(dependencies)}]")
    lines += ["meta:", f'  slack_channel: "#{team}"', f"  runbook: https://runbooks.example.com/{slug}"]
    return "\n".join(lines) + "\n"


def descriptor_yaml(index: int, rng: random.Random) -> str:
    """Service `index` as a Backstage Component (the same random draws as `service_yaml`)."""
    slug = service_slug(index)
    kind = rng.choice(TYPES)
    team = f"team-{rng.randrange(40):02d}"
    tags = sorted(rng.sample(TAGS, rng.randrange(0, 4)))
    dependencies = sorted({service_slug(rng.randrange(index)) for _ in range(rng.randrange(0, 4))}) if index else []
    lines = [
        "apiVersion: backstage.io/v1alpha1",
        "kind: Component",
        "metadata:",
        f"  name: {slug}",
        f"  title: Service {index:05d} {kind.title()}",
        f"  description: The {kind} that handles part {index} of the business. Owned by {team}.",
        "  annotations:",
        f"    github.com/project-slug: acme/{slug}",
        f'    service-catalog/priority: "{rng.randint(1, 10)}"',
        f"  tags: [{', '.join(tags)}]",
        "spec:",
        f"  type: {kind}",
        "  lifecycle: production",
        f"  owner: group:{team}",
        f"  dependsOn: [{', '.join(f'component:{d}' for d in dependencies)}]",
    ]
    return "\n".join(lines) + "\n"


def descriptor_path(index: int) -> str:
    return f"components/{service_slug(index)}/catalog-info.yaml"


def check_yaml(index: int, services: int, rng: random.Random) -> str:
    slug = f"check-{index:03d}"
    lines = [
        "# yaml-language-server: $schema=../schemas/check.schema.json",
        f"name: Check {index:03d}",
        f"slug: {slug}",
        f"description: Synthetic health check number {index}.",
    ]
    if index % 7 == 6:
        lines.append('schedule: "0 3 * * 1"')
    else:
        lines.append(f"frequency: {FREQUENCIES[index % len(FREQUENCIES)]}")
    lines.append(f"timeout: {rng.choice(['30m', '2h', '6h', '1d'])}")
    form = index % 4
    if form == 0:
        lines.append("services: all")
    elif form == 1:
        lines.append("services: none")
    elif form == 2:
        targets = sorted({service_slug(rng.randrange(services)) for _ in range(rng.randint(1, 20))})
        lines.append("services:")
        lines += [f"  - {target}" for target in targets]
    else:
        lines += ["services:", f"  type: {rng.choice(TYPES)}", f"  tags: [{rng.choice(TAGS)}]", "  max_priority: 5"]
    return "\n".join(lines) + "\n"


def generate(root: Path, services: int, checks: int, seed: int = 1, folders: int = 0, backstage: bool = False) -> Path:
    """Write the catalog under root and commit it; returns root."""
    rng = random.Random(seed)
    (root / "services").mkdir(parents=True, exist_ok=True)
    (root / "checks").mkdir(parents=True, exist_ok=True)
    (root / "catalog.yaml").write_text(
        "defaults:\n  frequency: daily\n  timeout: 6h\n  repository: acme/health-checks\n"
        "writeback:\n  branch: catalog-results\n  path: results/\n"
    )
    for index in range(services):
        path = root / (descriptor_path(index) if backstage else service_path(index, folders))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(descriptor_yaml(index, rng) if backstage else service_yaml(index, rng))
    for index in range(checks):
        (root / "checks" / f"check-{index:03d}.yaml").write_text(check_yaml(index, services, rng))
    git(root, "init", "--quiet", "--initial-branch=main")
    git(root, "add", "--all")
    git(root, "commit", "--quiet", "-m", f"Synthetic catalog: {services} services, {checks} checks")
    return root


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *GIT_IDENTITY, *args], cwd=root, check=True, capture_output=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--checks", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--folders", type=int, default=0, help="spread services over this many sub-folders")
    parser.add_argument("--backstage", action="store_true", help="services as Backstage catalog-info.yaml descriptors")
    args = parser.parse_args()
    generate(args.directory, args.services, args.checks, args.seed, args.folders, args.backstage)
    print(f"{args.directory}: {args.services} services, {args.checks} checks, one commit on main")


if __name__ == "__main__":
    main()
