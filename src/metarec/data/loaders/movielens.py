"""MovieLens loaders: CSV releases (ml-latest-small, ml-25m, ...), ml-100k and ml-1m.

Item text is ``"Title (Year). Genres: A, B, C"``. The catalogue is the whole movies file, rated
or not; a rated movie missing from it is still an item (with empty text).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from metarec.data.assemble import RawInteractions, build_dataset
from metarec.data.columns import floats, strings, texts, timestamps, unique_ids
from metarec.data.schema import Dataset
from metarec.data.tables import Table, read_delimited
from metarec.data.validation import require_file

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_NO_GENRE = {"", "unknown", "(no genres listed)"}
_RATING_COLUMNS = ("user", "item", "rating", "timestamp")


def movie_text(title: str, genres: Sequence[str]) -> str:
    """``"Toy Story (1995). Genres: Animation, Comedy"``; just the title without genres."""
    kept = [g.strip() for g in genres if g.strip() not in _NO_GENRE]
    title = title.strip()
    return f"{title}. Genres: {', '.join(kept)}" if kept else title


def load_movielens_csv(folder: Path | str, name: str | None = None) -> Dataset:
    """A CSV release folder: ``ratings.csv`` (userId,movieId,rating,timestamp) + ``movies.csv``."""
    folder = Path(folder)
    ratings = read_delimited(
        require_file(folder / "ratings.csv", "MovieLens ratings file"),
        ["userId", "movieId", "rating", "timestamp"],
    )
    movies = read_delimited(
        require_file(folder / "movies.csv", "MovieLens movies file"),
        ["movieId", "title", "genres"],
    )
    ids = unique_ids(movies, "movieId", "movie id")
    text = [
        movie_text(t, g.split("|"))
        for t, g in zip(texts(movies, "title"), texts(movies, "genres"), strict=True)
    ]
    return _dataset(name or folder.name, folder, ratings, ("userId", "movieId"), ids, text)


def load_ml100k(folder: Path | str, name: str | None = None) -> Dataset:
    """The ml-100k folder: ``u.data`` (tab-separated) and ``u.item`` (latin-1, '|' separated)."""
    folder = Path(folder)
    ratings = read_delimited(
        require_file(folder / "u.data", "MovieLens-100K ratings file"),
        delimiter="\t",
        header=False,
        names=_RATING_COLUMNS,
    )
    genres = _ml100k_genres(folder / "u.genre")
    names = ("movie_id", "title", "release_date", "video_release_date", "imdb_url", *genres)
    movies = read_delimited(
        require_file(folder / "u.item", "MovieLens-100K movies file"),
        ["movie_id", "title", *genres],
        delimiter="|",
        header=False,
        names=names,
        encoding="latin-1",
        quoting=False,
    )
    ids = unique_ids(movies, "movie_id", "movie id")
    flags = np.stack([_flags(movies, g) for g in genres], axis=1)  # (M, G)
    text = [
        movie_text(title, [g for g, on in zip(genres, row, strict=True) if on])
        for title, row in zip(texts(movies, "title"), flags, strict=True)
    ]
    return _dataset(name or folder.name, folder, ratings, ("user", "item"), ids, text)


def load_ml1m(folder: Path | str, name: str | None = None, encoding: str = "latin-1") -> Dataset:
    """The ml-1m folder: ``ratings.dat`` and ``movies.dat``, '::'-separated, latin-1."""
    folder = Path(folder)
    ratings = read_delimited(
        require_file(folder / "ratings.dat", "MovieLens-1M ratings file"),
        delimiter="::",
        header=False,
        names=_RATING_COLUMNS,
        encoding=encoding,
    )
    movies = read_delimited(
        require_file(folder / "movies.dat", "MovieLens-1M movies file"),
        delimiter="::",
        header=False,
        names=("movie_id", "title", "genres"),
        encoding=encoding,
    )
    ids = unique_ids(movies, "movie_id", "movie id")
    text = [
        movie_text(t, g.split("|"))
        for t, g in zip(texts(movies, "title"), texts(movies, "genres"), strict=True)
    ]
    return _dataset(name or folder.name, folder, ratings, ("user", "item"), ids, text)


def _dataset(
    name: str,
    folder: Path,
    ratings: Table,
    id_columns: tuple[str, str],
    movie_ids: pa.Array,
    movie_texts: list[str],
) -> Dataset:
    user_col, item_col = id_columns
    raw = RawInteractions(
        user=strings(ratings, user_col),
        item=strings(ratings, item_col),
        timestamp=timestamps(ratings, "timestamp"),
        rating=floats(ratings, "rating", "a rating (number)"),
    )
    return build_dataset(name, folder, raw, (movie_ids.to_pylist(), movie_texts), has_time=True)


def _ml100k_genres(path: Path) -> tuple[str, ...]:
    if not path.is_file():
        return ML100K_GENRES
    lines = path.read_text(encoding="latin-1").splitlines()
    names = [line.split("|")[0].strip() for line in lines if line.strip()]
    return tuple(names) or ML100K_GENRES


def _flags(movies: Table, genre: str) -> np.ndarray:
    return np.asarray(pc.equal(movies[genre], "1").to_numpy(), dtype=bool)
