from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.support.groups import support_group


@pytest.fixture
def superuser_client(db) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="x"))
    return client


@pytest.fixture
def support_client(db) -> Client:
    user = User.objects.create_user("sam", password="x", is_staff=True)
    user.groups.add(support_group())
    client = Client()
    client.force_login(user)
    return client
