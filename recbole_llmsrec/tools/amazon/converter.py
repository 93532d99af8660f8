"""The conversion: streamed parsing into per-user buckets, dedupe, k-core, and an all-or-nothing
publication of ``{name}.inter`` and ``{name}.item``."""

import glob
import math
import os
import shutil
import tempfile
import time

import numpy as np

from recbole_llmsrec.process import process_exists
from recbole_llmsrec.tools.amazon.parsing import (
    CHUNK_RECORDS,
    RECORD,
    ConversionError,
    check_name,
    open_output,
    parse_meta,
    parse_review,
    read_lines,
    skipping_failures,
    sync,
    user_draw,
)


def _remove_empty(folders):
    """Remove the folders a failed run created, deepest first; stops at one that is not empty."""
    for folder in folders:
        try:
            os.rmdir(folder)
        except OSError:
            break


class Converter:
    def __init__(
        self,
        reviews,
        meta,
        out,
        name,
        min_rating=None,
        k_core=5,
        drop_untitled=False,
        max_description=None,
        bucket_records=4_000_000,
        user_fraction=1.0,
        seed=0,
        overwrite=False,
    ):
        if not 0 < user_fraction <= 1:
            raise ValueError(f"user_fraction must be in (0, 1], got {user_fraction}")
        self.reviews, self.meta, self.name = reviews, meta, check_name(name)
        self.folder = os.path.join(out, name)
        self.targets = [
            os.path.join(self.folder, f"{name}.{suffix}") for suffix in ("inter", "item")
        ]
        self.min_rating, self.k_core, self.drop_untitled = min_rating, k_core, drop_untitled
        self.max_description, self.bucket_records = max_description, bucket_records
        self.user_fraction, self.seed, self.overwrite = user_fraction, seed, overwrite
        self.users, self.items = {}, {}
        # raw ids of the users sampling dropped (their reviews never get stored)
        self.unsampled = set()
        self.stats, self.work = {}, None

    def run(self):
        """Convert; return the summary. Raises ConversionError with existing output untouched."""
        start = time.perf_counter()
        for role, path in (("reviews", self.reviews), ("meta", self.meta)):
            if not os.path.isfile(path):
                raise ConversionError(f"{role} file not found: {path}")
        self._check_targets()
        created, published = self._make_folder(), False
        self._remove_abandoned_work()
        try:
            self.work = tempfile.mkdtemp(prefix=f".{self.name}.tmp-{os.getpid()}-", dir=self.folder)
            lines = self._convert_into_work()
            self._check_targets()  # output that appeared during the run is not replaced either
            staged = [os.path.join(self.work, os.path.basename(path)) for path in self.targets]
            for path, target in zip(staged, self.targets):  # the only steps that touch the output
                os.replace(path, target)
            published = True
            self._sync_folder()
        finally:
            if self.work:
                shutil.rmtree(self.work, ignore_errors=True)
            if not published:
                _remove_empty(created)
        self.stats["lines/s"] = lines / (time.perf_counter() - start)
        return self.stats

    def _convert_into_work(self):
        """Every step but the publication, written into the work folder; returns the lines read."""
        lines = self._parse()
        buckets = self._partition()
        self._dedupe(buckets)
        alive_user, alive_item = (
            np.ones(len(table), dtype=bool) for table in (self.users, self.items)
        )
        if self.drop_untitled:
            alive_item &= self._titled_items()
            untitled = self._count(buckets, ~alive_item)
            self.stats["interactions dropped: untitled items"] = untitled
        self._k_core(buckets, alive_user, alive_item)
        if not self.stats["interactions"]:
            reason = (
                f"{self.reviews} has no lines"
                if not lines
                else "no review line was parsed and kept"
                if not self.users
                else "the filters removed every interaction"
            )
            raise ConversionError(
                f"no interaction kept ({reason}), nothing written: {self._summary()}"
            )
        staged = [os.path.join(self.work, os.path.basename(path)) for path in self.targets]
        self._write_inter(buckets, alive_user, alive_item, staged[0])
        self._write_item(alive_item, staged[1])
        if not self.stats["share of items with title"]:
            raise ConversionError(
                f"none of the {self.stats['items']:,} items kept has a title in "
                f"{self.meta}, nothing written ({self._summary('meta ')})"
            )
        return lines

    def _remove_abandoned_work(self):
        """Remove work folders of killed runs (SIGKILL cannot clean up): their named process is
        gone."""
        for work in glob.glob(
            os.path.join(glob.escape(self.folder), f".{glob.escape(self.name)}.tmp-*-*")
        ):
            pid = os.path.basename(work).rsplit(".tmp-", 1)[1].split("-")[0]
            if pid.isdigit() and not process_exists(int(pid)):
                shutil.rmtree(work, ignore_errors=True)

    def _check_targets(self):
        """Refuse to replace existing output without ``overwrite``, or output that is a folder."""
        existing = [path for path in self.targets if os.path.lexists(path)]
        folders = [path for path in existing if os.path.isdir(path)]
        if folders:
            raise ConversionError(f"output path is a folder: {', '.join(folders)}")
        if existing and not self.overwrite:
            raise ConversionError(
                f"output already exists: {', '.join(existing)}; pass --overwrite to "
                "replace it (nothing was changed)"
            )

    def _make_folder(self):
        """Create the output folder; return those created, deepest first (a failed run removes
        them)."""
        created, folder = [], os.path.abspath(self.folder)
        while not os.path.lexists(folder):
            created.append(folder)
            folder = os.path.dirname(folder)
        os.makedirs(self.folder, exist_ok=True)
        return created

    def _sync_folder(self):
        """Make the renames durable where the platform allows fsync on a folder (best effort)."""
        try:
            fd = os.open(self.folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _summary(self, prefix=""):
        """The counts so far (those starting with ``prefix``), for the message of a failed run."""
        return ", ".join(
            f"{key}: {value:,}"
            for key, value in self.stats.items()
            if key.startswith(prefix) and isinstance(value, int)
        )

    def _parse(self):
        raw = open(os.path.join(self.work, "raw.bin"), "wb")
        counts = {"read": 0, "undecodable": 0}
        buffer, lines, malformed, low, unsampled = [], 0, 0, 0, 0
        for lines, line in enumerate(read_lines(self.reviews, counts), 1):
            review = skipping_failures(parse_review, line)
            if review is None:
                malformed += 1
                continue
            user, item, rating, seconds = review
            if self.min_rating is not None and rating < self.min_rating:
                low += 1
                continue
            if not self._sampled(user):
                unsampled += 1
                continue
            buffer.append(
                (
                    self.users.setdefault(user, len(self.users)),
                    self.items.setdefault(item, len(self.items)),
                    rating,
                    seconds,
                    lines,
                )
            )
            if len(buffer) == CHUNK_RECORDS:
                np.array(buffer, dtype=RECORD).tofile(raw)
                buffer = []
        np.array(buffer, dtype=RECORD).tofile(raw)
        raw.close()
        self.stats.update(
            {
                "lines read": counts["read"],
                "lines undecodable (skipped)": counts["undecodable"],
                "lines malformed (skipped)": malformed,
                "reviews dropped: rating below min": low,
            }
        )
        if self.user_fraction < 1:
            sampling = f"sampling {self.user_fraction:g} (seed {self.seed})"
            self.stats.update(
                {
                    f"users dropped: {sampling}": len(self.unsampled),
                    f"reviews dropped: {sampling}": unsampled,
                }
            )
        return counts["read"]

    def _sampled(self, user):
        """Whether sampling keeps this raw user id; each user is hashed once."""
        if self.user_fraction >= 1 or user in self.users:
            return True
        if user in self.unsampled:
            return False
        if user_draw(self.seed, user) < self.user_fraction:
            return True
        self.unsampled.add(user)
        return False

    def _chunks(self, path):
        with open(path, "rb") as f:
            while True:
                chunk = np.fromfile(f, dtype=RECORD, count=CHUNK_RECORDS)
                if not len(chunk):
                    return
                yield chunk

    def _partition(self):
        raw = os.path.join(self.work, "raw.bin")
        total = os.path.getsize(raw) // RECORD.itemsize
        count = max(1, math.ceil(total / self.bucket_records))
        buckets = [os.path.join(self.work, f"bucket{b}.bin") for b in range(count)]
        files = [open(path, "wb") for path in buckets]
        for chunk in self._chunks(raw):
            for b, f in enumerate(files):
                chunk[chunk["user"] % count == b].tofile(f)
        for f in files:
            f.close()
        os.remove(raw)
        return buckets

    def _load_sorted(self, path):
        records = np.fromfile(path, dtype=RECORD)
        return records[np.lexsort((records["line"], records["time"], records["user"]))]

    def _dedupe(self, buckets):
        duplicates = 0
        for path in buckets:
            records = self._load_sorted(path)  # by user, time, file line
            pair = records["user"].astype(np.int64) * len(self.items) + records["item"]
            # first = earliest (time, line) of the pair
            _, first = np.unique(pair, return_index=True)
            keep = np.zeros(len(records), dtype=bool)
            keep[first] = True
            duplicates += int((~keep).sum())
            records[keep].tofile(path)
        self.stats["reviews dropped: repeated (user, item)"] = duplicates

    def _degrees(self, buckets, alive_user, alive_item):
        users = np.zeros(len(self.users), dtype=np.int64)
        items = np.zeros(len(self.items), dtype=np.int64)
        for path in buckets:
            for chunk in self._chunks(path):
                chunk = chunk[alive_user[chunk["user"]] & alive_item[chunk["item"]]]
                users += np.bincount(chunk["user"], minlength=len(users))
                items += np.bincount(chunk["item"], minlength=len(items))
        return users, items

    def _count(self, buckets, item_mask):
        """Records whose item is in ``item_mask``."""
        return sum(
            int(item_mask[chunk["item"]].sum()) for path in buckets for chunk in self._chunks(path)
        )

    def _k_core(self, buckets, alive_user, alive_item):
        # one pass over the data per round
        users, items = self._degrees(buckets, alive_user, alive_item)
        before, rounds = int(users.sum()), 0
        while self.k_core:
            drop_user = alive_user & (users < self.k_core)
            drop_item = alive_item & (items < self.k_core)
            if not drop_user.any() and not drop_item.any():
                break
            alive_user &= ~drop_user
            alive_item &= ~drop_item
            rounds += 1
            users, items = self._degrees(buckets, alive_user, alive_item)
        alive_user &= users > 0
        alive_item &= items > 0
        self.stats.update(
            {
                f"interactions dropped: {self.k_core}-core ({rounds} rounds)": before
                - int(users.sum()),
                "users": int(alive_user.sum()),
                "items": int(alive_item.sum()),
                "interactions": int(users.sum()),
            }
        )
        n_users, n_items = max(1, self.stats["users"]), max(1, self.stats["items"])
        self.stats["density"] = self.stats["interactions"] / (n_users * n_items)

    def _write_inter(self, buckets, alive_user, alive_item, path):
        user_names = np.array(list(self.users), dtype=object)
        item_names = np.array(list(self.items), dtype=object)
        with open_output(path) as out:
            out.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
            for bucket in buckets:
                records = self._load_sorted(bucket)
                records = records[alive_user[records["user"]] & alive_item[records["item"]]]
                for user, item, rating, seconds in zip(
                    user_names[records["user"]],
                    item_names[records["item"]],
                    records["rating"],
                    records["time"],
                ):
                    out.write(f"{user}\t{item}\t{rating:g}\t{seconds:.3f}\n")
            sync(out)

    def _titled_items(self):
        titled = np.zeros(len(self.items), dtype=bool)
        for line in read_lines(self.meta, {"read": 0, "undecodable": 0}):
            parsed = skipping_failures(parse_meta, line, self.max_description)
            if parsed and parsed[1]["title"] and parsed[0] in self.items:
                titled[self.items[parsed[0]]] = True
        if len(titled) and not titled.any():
            raise ConversionError(
                f"no reviewed item has a title in {self.meta}: --drop-untitled would "
                "drop them all, nothing written"
            )
        return titled

    def _write_item(self, alive_item, path):
        wanted = {name: index for name, index in self.items.items() if alive_item[index]}
        written, titled, described, malformed, literal = set(), 0, 0, 0, 0
        counts = {"read": 0, "undecodable": 0}
        with open_output(path) as out:
            out.write(
                "item_id:token\ttitle:token_seq\tdescription:token_seq\tcategories:token_seq\t"
                "price:float\tbrand:token\n"
            )
            for line in read_lines(self.meta, counts):
                parsed = skipping_failures(parse_meta, line, self.max_description)
                if parsed is None:
                    malformed += 1
                    continue
                item, fields, as_literal = parsed
                literal += as_literal
                if item not in wanted or item in written:
                    continue
                written.add(item)
                titled += bool(fields["title"])
                described += bool(fields["description"])
                price = "" if fields["price"] is None else f"{fields['price']:g}"
                out.write(
                    f"{item}\t{fields['title']}\t{fields['description']}\t"
                    f"{fields['categories']}\t{price}\t{fields['brand']}\n"
                )
            for item in wanted.keys() - written:  # reviewed but absent from the metadata
                out.write(f"{item}\t\t\t\t\t\n")
            sync(out)
        n_items = max(1, len(wanted))
        self.stats.update(
            {
                "meta lines read": counts["read"],
                "meta lines undecodable (skipped)": counts["undecodable"],
                "meta lines malformed (skipped)": malformed,
                "meta lines parsed as Python literals": literal,
                "items without metadata": len(wanted) - len(written),
                "share of items with title": titled / n_items,
                "share of items with description": described / n_items,
            }
        )
