"""Product handoffs as GitHub issues: one issue per group of similar feature requests.

Each feature request joins the group of its most similar earlier mention in the tracker (token
Jaccard of the normalised text at or above ``similarity``, default 0.4, see
:mod:`triage.similarity`), or starts a new group. A group's first mention opens an issue (``POST /repos/{owner}/{repo}/issues``)
whose body lists the mentions and the count; each later mention adds a comment and updates the body
(``PATCH``) instead of opening another issue.

GitHub has no idempotency keys, so markers do that job: the body carries
``<!-- triage-group:ID -->`` and one ``<!-- triage-key:KEY -->`` per listed mention, and every
comment carries its mention's key. ``lookup`` (and any retry after a timeout) lists the issues with
the tracker's label and reads bodies and comments for them before sending anything again. Listing
is used rather than the search API because search is eventually consistent and can miss an issue
created seconds earlier.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from triage.config import Config, DestinationConfig
from triage.destinations.base import Destination
from triage.destinations.handoff import HandoffDestination, fail, http_client
from triage.destinations.preview import build as preview
from triage.keys import stable_key
from triage.limits import GITHUB_BODY, GITHUB_TITLE, clip
from triage.models import DeliveryItem
from triage.secrets import secret
from triage.similarity import FEATURE_THRESHOLD, SignatureIndex, signature
from triage.store import Store

log = logging.getLogger("triage.handoffs")

API_VERSION = "2022-11-28"
MAX_LISTED = 50  # mentions listed in an issue body; the count keeps counting beyond it


def _fence(text: str, limit: int = GITHUB_BODY) -> str:
    """Show text from the public as typed (no @-mentions, links, HTML or #refs), within ``limit``."""
    # The fence must be longer than any run of backticks inside, or the text could close it;
    # cutting the text can only shorten those runs, so the fence is measured before the cut.
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    body = clip(text, limit - 2 * len(ticks) - len("text\n\n"))
    return f"{ticks}text\n{body}\n{ticks}"


def _safe_link(url: Any) -> str | None:
    if not url or not str(url).startswith(("http://", "https://")):
        return None
    text = str(url)
    return None if len(text) > 500 or any(c in text for c in " ()<>[]\n") else text


def _within(head: list[str], text: str, tail: list[str]) -> str:
    """``head``, the fenced ``text`` and ``tail`` as one body of at most GitHub's 65,536."""
    fixed = "\n".join([*head, "", *tail])
    return "\n".join([*head, _fence(text, GITHUB_BODY - len(fixed) - 1), *tail])


def group_marker(group_id: str) -> str:
    """The hidden marker identifying a group's issue."""
    return f"<!-- triage-group:{group_id} -->"


def key_marker(key: str) -> str:
    """The hidden marker identifying one mention (delivery key) in a body or comment."""
    return f"<!-- triage-key:{key} -->"


def _handle(mention: dict[str, Any]) -> str:
    return clip(str(mention.get("author_handle") or "someone").replace("`", "'"), 100)


class GitHubDestination(HandoffDestination):
    """Folds feature requests into groups, one GitHub issue per group."""

    system = "github"

    def __init__(self, dest: DestinationConfig, config: Config, token: str) -> None:
        """Create the client for ``repo`` (``owner/name``) with a token allowed to write issues."""
        super().__init__(dest, config)
        self.repo = str(dest.settings["repo"])
        base = str(dest.settings.get("base_url") or "https://api.github.com")
        self._client = http_client(
            base,
            dest.settings,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
            },
        )
        self.labels = [str(x) for x in dest.settings.get("labels") or ["feature-request"]]
        self.threshold = float(dest.settings.get("similarity", FEATURE_THRESHOLD))
        self._index: SignatureIndex | None = None

    # ----------------------------------------------------------------- groups
    def assign(self, key: str, item: DeliveryItem) -> str:
        """Fold the item into its group (once per key) and return the group id."""
        mention = self.store.feature_mention(key)
        if mention is not None:
            return str(mention["group_id"])
        sig = signature(item.text)
        if self._index is None:
            # Loaded once per drain: every later mention of the run is compared in memory.
            self._index = SignatureIndex(
                [
                    (gid, frozenset(words.split()))
                    for gid, words in self.store.feature_signatures(self.name)
                ]
            )
        # Single linkage: a mention joins the group of its most similar earlier mention, so a
        # group can grow from "dark mode" to "dark mode, white screen blinding" one step at a time.
        group_id, score = self._index.best(sig, self.threshold)
        new_group = None
        if group_id is None:
            group_id = stable_key(self.name, key, size=8)
            title = " ".join(item.text.split())
            new_group = {
                "id": group_id,
                "destination": self.name,
                "title": title if len(title) <= 70 else title[:67] + "...",
                "signature": " ".join(sorted(sig)),
            }
            score = 1.0
        self.store.add_feature_mention(
            key, item.id, score, group_id, new_group, signature=" ".join(sorted(sig))
        )
        self._index.add(group_id, sig)
        return group_id

    def bind(self, store: Store, destinations: dict[str, Destination]) -> None:
        """Bind the store for a drain; the signature index is reloaded from it on first use."""
        self._index = None
        super().bind(store, destinations)

    def issue_body(self, group: dict[str, Any]) -> str:
        """The issue body: count, the first request, and the linked mentions."""
        mentions = [
            {
                **m,
                "text": self.privacy.text(str(m["text"]), self.name),
                "author_handle": self.privacy.optional(m.get("author_handle"), self.name),
                "url": self.privacy.link(m.get("url"), self.name),
            }
            for m in self.store.group_mentions(group["id"], MAX_LISTED)
        ]
        count = int(group["mentions"])
        lines = [
            group_marker(group["id"]),
            (
                f"**{count} mention{'s' if count != 1 else ''}** of this feature request in "
                "customer feedback (similar requests from any source are folded into this issue)."
            ),
            "",
        ]
        listed = ["", "### Mentions", ""] if mentions else []
        for m in mentions:
            when = m["created_at"].strftime("%Y-%m-%d") if m.get("created_at") else ""
            where = self._where(m["source"], m.get("url"))
            listed.append(f"- {where} by `{_handle(m)}` {when} {key_marker(m['key'])}")
        if count > len(mentions):
            listed.append(f"- … and {count - len(mentions)} more")
        if not mentions:
            return "\n".join(lines + listed)
        return _within(lines, str(mentions[0]["text"]), listed)

    @staticmethod
    def _where(source: str, url: str | None) -> str:
        """The mention's source as a link when its url is safe, else as code."""
        name = clip(str(source).replace("`", "'").replace("]", ")"), 100)
        link = _safe_link(url)
        return f"[{name}]({link})" if link else f"`{name}`"

    # ----------------------------------------------------------------- GitHub
    def _issues(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in range(1, 11):  # bounded: 1,000 issues with the tracker's label
            resp = self.call(
                "GET",
                f"/repos/{self.repo}/issues",
                params={
                    "state": "all",
                    "labels": self.labels[0],
                    "per_page": 100,
                    "page": page,
                },
            )
            if resp.status_code != 200:
                raise fail(f"github {self.name}", resp)
            batch = resp.json()
            out += batch
            if len(batch) < 100:
                break
        return out

    def find_issue(self, group_id: str) -> dict[str, Any] | None:
        """The issue carrying a group's marker, if one exists.

        Looked for among the issues with the tracker's label, then among the newest issues: GitHub
        keeps a new issue but drops its labels, without an error, when the token's account lacks
        push access, and an issue whose create timed out moments ago is one of the newest.
        """
        marker = group_marker(group_id)
        for issues in (self._issues, self._newest):
            found = next((i for i in issues() if marker in str(i.get("body") or "")), None)
            if found is not None:
                return found
        return None

    def _newest(self) -> list[dict[str, Any]]:
        resp = self.call(
            "GET",
            f"/repos/{self.repo}/issues",
            params={"state": "all", "sort": "created", "direction": "desc", "per_page": 100},
        )
        if resp.status_code != 200:
            raise fail(f"github {self.name}", resp)
        return list(resp.json())

    def _has_comment(self, number: int, key: str) -> bool:
        marker = key_marker(key)
        for page in range(1, 11):
            resp = self.call(
                "GET",
                f"/repos/{self.repo}/issues/{number}/comments",
                params={"per_page": 100, "page": page},
            )
            if resp.status_code != 200:
                raise fail(f"github {self.name}", resp)
            batch = resp.json()
            if any(marker in str(c.get("body") or "") for c in batch):
                return True
            if len(batch) < 100:
                break
        return False

    def _issue_of(self, group: dict[str, Any]) -> dict[str, Any] | None:
        if group["issue_number"] is not None:
            return {"number": int(group["issue_number"]), "html_url": group["issue_url"]}
        found = self.find_issue(group["id"])
        if found:
            self.store.set_group_issue(group["id"], int(found["number"]), found["html_url"])
        return found

    def send(self, key: str, kind: str, item: DeliveryItem) -> str:
        """Open the group's issue, or comment on it and update its count."""
        earlier = self.seen_before(key, item)
        if earlier:
            return earlier
        self.store.begin_handoff(key, item.id, self.name, self.system, "mention")
        group_id = self.assign(key, item)
        group = self.store.feature_group(group_id)
        assert group is not None  # assign() just stored it
        issue = self._issue_of(group)
        if issue is None:
            resp = self.call(
                "POST",
                f"/repos/{self.repo}/issues",
                json={
                    "title": clip(f"Feature request: {group['title']}", GITHUB_TITLE),
                    "body": self.issue_body(group),
                    "labels": self.labels,
                },
                idempotent=False,
            )
            if resp.status_code != 201:
                raise fail(f"github {self.name}", resp)
            issue = resp.json()
            self.store.set_group_issue(group_id, int(issue["number"]), issue["html_url"])
            self._check_labels(issue)
            return self.finish(key, str(issue["number"]), issue["html_url"])
        number = int(issue["number"])
        similarity = float((self.store.feature_mention(key) or {}).get("similarity", 1.0))
        head = (
            f"Another mention (now {group['mentions']}) from "
            f"{self._where(item.source, item.url)}, similarity {similarity:.2f}:"
        )
        comment = _within([head, ""], item.text, [key_marker(key)])
        resp = self.call(
            "POST",
            f"/repos/{self.repo}/issues/{number}/comments",
            json={"body": comment},
            idempotent=False,
        )
        if resp.status_code != 201:
            raise fail(f"github {self.name}", resp)
        self._update_body(group_id, number)
        return self.finish(key, str(number), issue["html_url"])

    def _check_labels(self, issue: dict[str, Any]) -> None:
        """Say so when GitHub dropped the labels of the issue just opened (no push access)."""
        kept = {str(lab.get("name")) for lab in issue.get("labels") or [] if isinstance(lab, dict)}
        missing = [lab for lab in self.labels if lab not in kept]
        if missing:
            log.warning(
                "github %s: issue #%s was opened without the labels %s: GitHub drops them "
                "silently when the token's account has no push access to %s; give it write "
                "access, or the product team will not find these issues by their label",
                self.name,
                issue.get("number"),
                ", ".join(missing),
                self.repo,
            )

    def _update_body(self, group_id: str, number: int) -> None:
        group = self.store.feature_group(group_id)
        assert group is not None
        resp = self.call(
            "PATCH", f"/repos/{self.repo}/issues/{number}", json={"body": self.issue_body(group)}
        )
        if resp.status_code != 200:
            raise fail(f"github {self.name}", resp)

    def lookup(self, key: str, item: DeliveryItem) -> str | None:
        """Find the mention's key in its group's issue body or comments."""
        ref = self.store.handoff_ref(key)
        if ref and ref["state"] == "done":
            return self.reference(ref)
        mention = self.store.feature_mention(key)
        if mention is None:
            return None  # never folded in, so never sent
        group = self.store.feature_group(str(mention["group_id"]))
        if group is None:
            return None
        issue = self._issue_of(group)
        if issue is None:
            return None
        number = int(issue["number"])
        body = issue.get("body")
        if body is None:
            resp = self.call("GET", f"/repos/{self.repo}/issues/{number}")
            if resp.status_code != 200:
                raise fail(f"github {self.name}", resp)
            body = resp.json().get("body") or ""
        if key_marker(key) in str(body) or self._has_comment(number, key):
            if ref is None:
                self.store.begin_handoff(key, item.id, self.name, self.system, "mention")
            # The count in the body may predate this mention; bring it up to date.
            self._update_body(group["id"], number)
            return self.finish(key, str(number), issue["html_url"])
        return None


def build(dest: DestinationConfig, config: Config) -> Destination:
    """A ``github`` destination (JSON previews without a token)."""
    if not dest.settings.get("repo") or "/" not in str(dest.settings["repo"]):
        raise ValueError(f"destination '{dest.name}': github needs 'repo: owner/name'")
    token = secret(dest.settings, "token_env", "GITHUB_TOKEN", "token_secret")
    if not token:
        return preview(dest, config)
    return GitHubDestination(dest, config, token)
