"""factory_boy factories for the registry; each app's tests add theirs in tests/<app>/factories.py."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from models_app.registry.models import Agent, ModelKind, ModelStatus, ModelVersion, ProviderAccount, ProviderKind


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    is_staff = True
    password = factory.django.Password("correct horse battery staple")


class ProviderAccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProviderAccount
        django_get_or_create = ("name",)

    name = "simulator"
    kind = ProviderKind.SIMULATOR
    base_url = "http://127.0.0.1:8765"
    api_key_env = "GENESIS_SIMULATOR_API_KEY"


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agent
        django_get_or_create = ("slug",)

    slug = factory.Sequence(lambda n: f"agent_{n}")
    name = factory.LazyAttribute(lambda agent: agent.slug.replace("_", " ").title())


class ModelVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelVersion

    agent = factory.SubFactory(AgentFactory)
    provider = factory.SubFactory(ProviderAccountFactory)
    model_id = factory.Sequence(lambda n: f"ft:open-mistral-7b:{n:08x}:20261101:deadbeef")
    base_model = "open-mistral-7b"
    kind = ModelKind.FINE_TUNED
    status = ModelStatus.REGISTERED
