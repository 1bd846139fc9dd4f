"""`convers memory ...` (the recall store) and `convers profile ...` (the curated profile)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import click

from convers.cli.context import settings_from
from convers.config import Settings
from convers.contracts.memory import KEY_KINDS, MemoryStoreError
from convers.memory.profile import ProfileError, ProfileFile, parse_profile
from convers.memory.store import SqliteMemoryStore
from convers.recordings import Recordings


def _open_store(settings: Settings, with_embedder: bool) -> SqliteMemoryStore:
    embedder = None
    if with_embedder:
        from convers.app.wiring import build

        try:
            embedder = build("embedder", settings)
        except Exception as error:  # noqa: BLE001 - word search still works
            click.echo(f"note: embedder unavailable, searching by words only ({error})", err=True)
    try:
        return SqliteMemoryStore.from_settings(settings, embedder)
    except MemoryStoreError as error:
        raise click.ClickException(str(error)) from None


def _line(turn_id: str, when: str, speaker: str, text: str, width: int = 100) -> str:
    flat = " ".join(text.split())
    if len(flat) > width:
        flat = flat[: width - 1] + "…"
    return f"{turn_id}  {when}  {speaker}: {flat}"


@click.group()
def memory() -> None:
    """See, search, export and delete what the agent remembers."""


@memory.command("list")
@click.option("-n", "--limit", default=20, show_default=True, help="How many turns.")
@click.option("--offset", default=0, help="Skip this many newest turns.")
@click.option("--digests", is_flag=True, help="Include the short summaries of long turns.")
@click.pass_context
def list_turns(ctx: click.Context, limit: int, offset: int, digests: bool) -> None:
    """The newest stored turns, with the ids `forget` takes."""
    with _open_store(settings_from(ctx), with_embedder=False) as store:
        turns = store.list(limit, offset, kind=None if digests else "turn")
        stats = store.stats()
    for turn in turns:
        label = f"{turn.speaker} (summary)" if turn.kind == "digest" else turn.speaker
        click.echo(_line(turn.id, turn.time.strftime("%Y-%m-%d %H:%M"), label, turn.text))
    click.echo(
        f"({stats.turns} turns, {stats.digests} summaries, {stats.unembedded + stats.stale} waiting for a vector; "
        f"{stats.path})",
        err=True,
    )


@memory.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """How much is stored, and how far re-embedding (after an upgrade or an embedder change) has come."""
    settings = settings_from(ctx)
    with _open_store(settings, with_embedder=False) as store:
        stats = store.stats()
        version = store.schema_version()
        embedders = store.embedders()
    click.echo(f"memory: {stats.path} (schema {version}, dates in {store.local_zone})")
    keys = f"{stats.keys} derived key{'' if stats.keys == 1 else 's'}"
    click.echo(f"  {stats.turns} turns, {stats.digests} summaries, {keys} (names, topics: `convers memory keys`)")
    vectors = ", ".join(f"{n} by {name}" for name, n in embedders.items()) or "none"
    click.echo(f"  vectors: {vectors}; embedder now: {settings.embedder.provider}")
    waiting = stats.unembedded + stats.stale
    if waiting:
        total = stats.turns + stats.digests
        click.echo(f"  re-embedding: {total - waiting} of {total} current, {stats.unembedded} without a vector, "
                   f"{stats.stale} of an older format; done in the background while convers runs")
    else:
        click.echo("  every turn has a current vector")


@memory.command()
@click.argument("query")
@click.option("-k", default=5, show_default=True, help="How many results.")
@click.option("--floor", type=float, default=0.0, show_default=True, help="Hide results under this similarity.")
@click.option("--mode", type=click.Choice(["fused", "vector", "lexical"]), default="fused", show_default=True)
@click.pass_context
def search(ctx: click.Context, query: str, k: int, floor: float, mode: str) -> None:
    """Turns related to QUERY, best first, with their similarity."""
    with _open_store(settings_from(ctx), with_embedder=mode != "lexical") as store:
        try:
            hits = store.search(query, k, floor=floor, mode=mode)  # type: ignore[arg-type]
        except MemoryStoreError as error:
            raise click.ClickException(str(error)) from None
    if not hits:
        click.echo("nothing found", err=True)
    for hit in hits:
        click.echo(f"{hit.score:.3f}  " + _line(hit.id, hit.turn.time.strftime("%Y-%m-%d"), hit.turn.speaker, hit.text))


@memory.command()
@click.argument("turn_id")
@click.pass_context
def forget(ctx: click.Context, turn_id: str) -> None:
    """Delete one turn (and its summary and the keys derived from them) by id."""
    settings = settings_from(ctx)
    with _open_store(settings, with_embedder=False) as store:
        turn = store.get(turn_id)
        if not store.forget(turn_id):
            raise click.ClickException(f"no stored turn has id {turn_id!r}; `convers memory list` shows ids")
    # The turn's recording (recorder.enabled) goes with it: forgetting words must forget the voice too.
    recorded = Recordings(settings.data_path).forget(turn.session, [turn.text]) if turn is not None else 0
    click.echo(f"forgot {turn_id}" + (f" and its recording ({recorded})" if recorded else ""))


@memory.command("keys")
@click.option("--search", "containing", default=None, help="Only keys containing these letters.")
@click.option("--turn", "turn_id", default=None, help="Only the keys derived from this turn.")
@click.option("--kind", type=click.Choice(KEY_KINDS), default=None, help="Only names, topics or observations.")
@click.option("-n", "--limit", default=50, show_default=True, help="How many keys.")
@click.pass_context
def list_keys(ctx: click.Context, containing: str | None, turn_id: str | None, kind: str | None, limit: int) -> None:
    """The search keys derived from turns (names, topics, observations), each with the turn it came from."""
    with _open_store(settings_from(ctx), with_embedder=False) as store:
        keys = store.keys(kind=kind, containing=containing, turn_id=turn_id, limit=limit)
        total = store.stats().keys
    for key in keys:
        click.echo(f"{key.key:<24}  " + _line(key.turn_id, key.kind, key.speaker, key.text))
    click.echo(f"({len(keys)} shown of {total} keys; `convers memory forget-key KIND KEY` deletes one)", err=True)


@memory.command("forget-key")
@click.argument("kind", type=click.Choice(KEY_KINDS))
@click.argument("key")
@click.option("--turn", "turn_id", default=None, help="Only from this turn (default: from every turn).")
@click.pass_context
def forget_key(ctx: click.Context, kind: str, key: str, turn_id: str | None) -> None:
    """Delete a derived key; the turns it came from stay."""
    with _open_store(settings_from(ctx), with_embedder=False) as store:
        # Names and topics are stored lower-cased; an observation as the model wrote it.
        removed = store.forget_key(kind, key if kind == "observation" else key.lower(), turn_id)
    if not removed:
        raise click.ClickException(f"no {kind} key {key!r}; `convers memory keys` lists them")
    click.echo(f"forgot the {kind} key {key!r} of {removed} turn(s)")


@memory.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def wipe(ctx: click.Context, yes: bool) -> None:
    """Delete every stored turn (the profile stays: `convers profile edit` changes it)."""
    settings = settings_from(ctx)
    with _open_store(settings, with_embedder=False) as store:
        count = store.count(kind=None)
        if not yes:
            click.confirm(f"Delete all {count} remembered turns from {store.path}?", abort=True)
        removed = store.wipe()
    recordings = Recordings(settings.data_path).wipe()
    click.echo(f"wiped {removed} turns" + (f" and {recordings} recorded turns" if recordings else ""))


@memory.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def export_turns(ctx: click.Context, file: Path) -> None:
    """Write every turn to FILE as JSON lines ('-' for standard output)."""
    with _open_store(settings_from(ctx), with_embedder=False) as store:
        if str(file) == "-":
            count = store.export_jsonl(sys.stdout)
        else:
            with file.open("w", encoding="utf-8") as out:
                count = store.export_jsonl(out)
    click.echo(f"exported {count} turns" + ("" if str(file) == "-" else f" to {file}"), err=True)


@memory.command("import")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, allow_dash=True, path_type=Path))
@click.option("--no-embed", is_flag=True, help="Store without vectors now; they are filled in during later conversations.")
@click.pass_context
def import_turns(ctx: click.Context, file: Path, no_embed: bool) -> None:
    """Add turns from a JSON-lines FILE (the `export` format); ids already stored are skipped."""
    with _open_store(settings_from(ctx), with_embedder=not no_embed) as store:
        handle = sys.stdin if str(file) == "-" else file.open(encoding="utf-8")
        try:
            added, skipped = store.import_jsonl(handle, embed=not no_embed)
        except ValueError as error:
            raise click.ClickException(f"{file}: {error}; nothing was imported") from None
        finally:
            if handle is not sys.stdin:
                handle.close()
    click.echo(f"imported {added} turns, skipped {skipped} already stored")


# ----------------------------------------------------------------- profile


@click.group()
def profile() -> None:
    """Show and correct what the agent knows about you for sure."""


def _profile_file(ctx: click.Context) -> ProfileFile:
    return ProfileFile.in_data_dir(settings_from(ctx).data_path)


@profile.command()
@click.option("--json", "as_json", is_flag=True, help="The raw file instead of the prompt text.")
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    """Print the profile as it goes into the prompt."""
    file = _profile_file(ctx)
    try:
        loaded = file.load()
    except ProfileError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(loaded.model_dump_json(indent=2))
    else:
        click.echo(loaded.render() or f"(empty profile; {file.path})")


@profile.command("set")
@click.argument("key")
@click.argument("value")
@click.pass_context
def set_value(ctx: click.Context, key: str, value: str) -> None:
    """Set KEY (name, preferences, notes, people.NAME) to VALUE.

    Lists (preferences, notes) take items separated by ';'; an empty VALUE clears the key.
    Example: convers profile set people.Ana "my sister, lives in Lisbon"
    """
    try:
        updated = _profile_file(ctx).update(key, value)
    except ProfileError as error:
        raise click.ClickException(str(error)) from None
    click.echo(updated.render() or "(empty profile)")


@profile.command()
@click.pass_context
def edit(ctx: click.Context) -> None:
    """Open the profile in $EDITOR; it is checked before it replaces the old one."""
    file = _profile_file(ctx)
    try:
        current = file.load()
        text = current.model_dump_json(indent=2) + "\n"
    except ProfileError as error:
        click.echo(f"{error}\nOpening the broken file as it is so you can fix it.", err=True)
        text = file.path.read_text(encoding="utf-8")
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    handle, temp = tempfile.mkstemp(prefix="profile-", suffix=".json")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        while True:
            result = subprocess.run([*shlex.split(editor), temp], check=False)
            if result.returncode != 0:
                raise click.ClickException(f"editor {editor!r} exited with {result.returncode}; profile unchanged")
            edited = Path(temp).read_text(encoding="utf-8")
            try:
                parsed = parse_profile(edited, "as edited")
                break
            except ProfileError as error:
                if not click.confirm(f"{error}\nEdit again?", default=True):
                    raise click.ClickException("profile unchanged") from None
        # The file may have been broken before: replace it directly now that the new text is valid.
        file.path.parent.mkdir(parents=True, exist_ok=True)
        if file.path.exists():
            try:
                file.load()
            except ProfileError:
                file.path.replace(file.path.with_suffix(".json.broken"))
                click.echo(f"kept the broken file as {file.path.with_suffix('.json.broken')}", err=True)
        file.save(parsed)
    finally:
        Path(temp).unlink(missing_ok=True)
    click.echo(json.dumps({"saved": str(file.path)}))


@profile.command("prompt")
@click.option("--overlay", "overlays", multiple=True, help="Add a persona overlay (data_dir/persona/NAME.md), as the page's ?persona= does.")
@click.pass_context
def show_prompt(ctx: click.Context, overlays: tuple[str, ...]) -> None:
    """Print the system prompt the model is given: persona layers, profile and relationship memo.

    Memories recalled for a question are added per turn and are not shown here.
    """
    from convers.app.wiring import session_persona
    from convers.engine.reply.prompt import PersonaError, PromptBuilder
    from convers.memory.reflection import Reflection

    settings = settings_from(ctx)
    try:
        persona = session_persona(settings, overlays, tools=settings.tools.names())
        profile_text = _profile_file(ctx).load().render()
    except (PersonaError, ProfileError) as error:
        raise click.ClickException(str(error)) from None
    if settings.memory.reflection:
        # The memo joins the profile exactly as memory/conversation.py puts it into every prompt.
        memo = Reflection(None, settings.data_path, settings.agent.name).memo()  # type: ignore[arg-type]
        if memo:
            profile_text = f"{profile_text}\n\nYour own notes on this relationship:\n{memo}".strip()
    system = PromptBuilder(persona=persona).build("", profile=profile_text)[0]
    click.echo(system.content)
