"""Pages served by path (a CMS's page tree), blog posts with authors, API articles, accounts and tokens.

The tables are created by the test (no migrations): ``cms/schema.sql``."""

from django.db import models


class Page(models.Model):
    path = models.CharField(max_length=200, unique=True)
    title = models.CharField(max_length=200)
    kind = models.CharField(max_length=20)  # "home" | "blog" | "locations" | "plain"

    class Meta:
        db_table = "cms_page"


class Author(models.Model):
    name = models.CharField(max_length=100)

    class Meta:
        db_table = "cms_author"


class Post(models.Model):
    title = models.CharField(max_length=200)
    author = models.ForeignKey(Author, on_delete=models.CASCADE)

    class Meta:
        db_table = "cms_post"


class Location(models.Model):
    city = models.CharField(max_length=100)

    class Meta:
        db_table = "cms_location"


class Article(models.Model):
    slug = models.SlugField(unique=True)
    title = models.CharField(max_length=200)

    class Meta:
        db_table = "cms_article"


class Account(models.Model):
    username = models.CharField(max_length=100, unique=True)
    password_sha256 = models.CharField(max_length=64)

    class Meta:
        db_table = "cms_account"


class ApiToken(models.Model):
    key = models.CharField(max_length=40, unique=True)
    account = models.ForeignKey(Account, on_delete=models.CASCADE)

    class Meta:
        db_table = "cms_apitoken"
