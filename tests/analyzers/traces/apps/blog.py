"""A Flask blog on Flask-SQLAlchemy (psycopg2, a connection pool), with the ORM's usual problems.

- ``GET /``: the latest 15 posts and each one's comment count through the lazy
  ``post.comments`` relationship: 15 more statements (an N+1 of ~15 statements);
- ``GET /api/users``: per user, three COUNTs (posts, comments, likes), 50 users:
  one loop of three statements (token-protected: 401 without it);
- ``GET /posts/<int:post_id>``: a post with its comments loaded in one more
  statement (``selectinload``): clean; with ``BLOG_RELATED_POSTS=1`` (a later
  release) also the author's other posts, by a statement that takes 60 ms
  (``pg_sleep``: the slow query such a release ships);
- ``GET /docs/<path:page>``: documentation pages under one catch-all route;
- ``GET /health``.

Run: ``BLOG_DSN=... gunicorn blog:app``.
"""

import os

import psycopg2
from flask import Flask, abort, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, func, select, text
from sqlalchemy.orm import Mapped, mapped_column, relationship, selectinload

TOKEN = "blog-token-42"
DOCS = {"intro": "Introduction", "guide/install": "Installing", "guide/deploy": "Deploying"}

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = "postgresql+psycopg2://"
# psycopg2.connect is looked up at each call, so the agent's connect spans see the pool's connections.
app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"creator": lambda: psycopg2.connect(os.environ["BLOG_DSN"]),
                                           "pool_size": 2}
db = SQLAlchemy(app)


class User(db.Model):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Post(db.Model):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    comments: Mapped[list["Comment"]] = relationship(lazy="select")


class Comment(db.Model):
    __tablename__ = "comments"
    id: Mapped[int] = mapped_column(primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    body: Mapped[str]


class Like(db.Model):
    __tablename__ = "likes"
    id: Mapped[int] = mapped_column(primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))


@app.get("/")
def index():
    posts = db.session.scalars(select(Post).order_by(Post.id.desc()).limit(15)).all()
    return jsonify([{"title": p.title, "comments": len(p.comments)} for p in posts])  # lazy: one query each


@app.get("/api/users")
def users():
    if request.headers.get("Authorization") != f"Bearer {TOKEN}":
        return jsonify({"error": "unauthorized"}), 401
    out = []
    for user in db.session.scalars(select(User).order_by(User.id).limit(50)):
        counts = [db.session.scalar(select(func.count()).select_from(model).where(model.user_id == user.id))
                  for model in (Post, Comment, Like)]
        out.append({"name": user.name, "posts": counts[0], "comments": counts[1], "likes": counts[2]})
    return jsonify(out)


@app.get("/posts/<int:post_id>")
def post(post_id):
    found = db.session.scalars(select(Post).options(selectinload(Post.comments)).where(Post.id == post_id)).first()
    if found is None:
        abort(404)
    answer = {"title": found.title, "comments": [c.body for c in found.comments]}
    if os.environ.get("BLOG_RELATED_POSTS") == "1":
        related = db.session.execute(text(
            "SELECT p.id, p.title FROM posts p CROSS JOIN pg_sleep(0.06) WHERE p.user_id = :user AND p.id <> :post "
            "ORDER BY p.id DESC LIMIT 5"), {"user": found.user_id, "post": found.id})
        answer["related"] = [row.title for row in related]
    return jsonify(answer)


@app.get("/docs/<path:page>")
def docs(page):
    if page not in DOCS:
        abort(404)
    return jsonify({"title": DOCS[page], "posts": db.session.scalar(select(func.count()).select_from(Post))})


@app.get("/health")
def health():
    db.session.execute(select(1))
    return jsonify({"ok": True})


SCHEMA = """
CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE posts (id serial PRIMARY KEY, title text NOT NULL, user_id int NOT NULL REFERENCES users (id));
CREATE TABLE comments (id serial PRIMARY KEY, post_id int NOT NULL REFERENCES posts (id),
                       user_id int NOT NULL REFERENCES users (id), body text NOT NULL);
CREATE TABLE likes (id serial PRIMARY KEY, post_id int NOT NULL REFERENCES posts (id),
                    user_id int NOT NULL REFERENCES users (id));
INSERT INTO users (name) SELECT 'user ' || i FROM generate_series(1, 60) i;
INSERT INTO posts (title, user_id) SELECT 'post ' || i, 1 + i % 60 FROM generate_series(1, 200) i;
INSERT INTO comments (post_id, user_id, body) SELECT 1 + i % 200, 1 + i % 60, 'nice' FROM generate_series(1, 900) i;
INSERT INTO likes (post_id, user_id) SELECT 1 + i % 200, 1 + i % 60 FROM generate_series(1, 700) i;
"""
