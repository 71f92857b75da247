"""The fake Slack's files API: the upload flow ``files_upload_v2`` uses, as strict as Slack's.

From Slack's reference for ``files.getUploadURLExternal`` and ``files.completeUploadExternal``:

1. ``files.getUploadURLExternal`` (scope ``files:write``) takes ``filename`` and ``length`` (the
   size in bytes, an integer; both required) and an optional ``alt_txt`` of at most 1,000
   characters; it answers an ``upload_url`` and a ``file_id``.
2. The bytes are POSTed to ``upload_url`` (raw or multipart); the upload service answers 200.
3. ``files.completeUploadExternal`` (``files:write``) takes ``files``, a JSON array of
   ``{"id", "title"}``; a file that was never uploaded cannot be completed (``file_not_found``),
   nor one whose upload is not the announced length. ``channel_id`` must be a conversation ID;
   without it the file stays private.

Image blocks may then show a completed file with ``slack_file: {"id": ...}``; a message naming a
file id that was not completed is refused with ``invalid_blocks``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_ALT_TXT = 1000
SCOPE = "files:write"


@dataclass
class FakeFiles:
    """The files of the fake workspace."""

    announced: dict[str, dict[str, Any]] = field(default_factory=dict)
    uploaded: dict[str, bytes] = field(default_factory=dict)
    completed: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 1

    def get_upload_url(self, args: dict[str, Any], base_url: str) -> dict[str, Any]:
        """``files.getUploadURLExternal``."""
        filename = str(args.get("filename") or "")
        try:
            length = int(str(args.get("length")))
        except ValueError:
            return {"ok": False, "error": "invalid_arguments"}
        if not filename or length <= 0:
            return {"ok": False, "error": "invalid_arguments"}
        if len(str(args.get("alt_txt") or "")) > MAX_ALT_TXT:
            return {"ok": False, "error": "alt_txt_too_large"}
        file_id = f"F{self.next_id:010d}"
        self.next_id += 1
        self.announced[file_id] = {"filename": filename, "length": length}
        return {"ok": True, "file_id": file_id, "upload_url": f"{base_url}upload/v1/{file_id}"}

    def upload(self, file_id: str, body: bytes) -> bool:
        """The upload service: True when the file id was announced."""
        if file_id not in self.announced:
            return False
        self.uploaded[file_id] = body
        return True

    def complete(self, args: dict[str, Any], channel_ok: bool) -> dict[str, Any]:
        """``files.completeUploadExternal``."""
        raw = args.get("files")
        try:
            files = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError:
            return {"ok": False, "error": "invalid_arguments"}
        if not isinstance(files, list) or not files:
            return {"ok": False, "error": "invalid_arguments"}
        if args.get("channel_id") and not channel_ok:
            return {"ok": False, "error": "channel_not_found"}
        done = []
        for f in files:
            fid = str(f.get("id") or "") if isinstance(f, dict) else ""
            body = self.uploaded.get(fid)
            if body is None or len(body) != self.announced[fid]["length"]:
                return {"ok": False, "error": "file_not_found"}
            record = {
                "id": fid,
                "name": self.announced[fid]["filename"],
                "title": f.get("title") or self.announced[fid]["filename"],
                "size": len(body),
                "channels": [args["channel_id"]] if args.get("channel_id") else [],
            }
            self.completed[fid] = record
            done.append(record)
        return {"ok": True, "files": done}

    def unknown_images(self, blocks: Any) -> list[str]:
        """Image blocks naming a Slack file that was not completed."""
        problems = []
        for n, block in enumerate(blocks if isinstance(blocks, list) else []):
            ref = block.get("slack_file") if isinstance(block, dict) else None
            known = isinstance(ref, dict) and str(ref.get("id")) in self.completed
            if isinstance(ref, dict) and block.get("type") == "image" and not known:
                problems.append(f"block {n}: slack_file {ref.get('id')} is not an uploaded file")
        return problems
