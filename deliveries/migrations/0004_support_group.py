"""The Support group: sees everything, operates deliveries and subscriptions, manages no keys."""

from django.db import migrations

SUPPORT_PERMISSIONS = [
    ("tenants", "view_tenant"),
    ("tenants", "view_apikey"),
    ("webhooks", "view_subscription"),
    ("webhooks", "operate_subscription"),
    ("deliveries", "view_event"),
    ("deliveries", "view_delivery"),
    ("deliveries", "view_attempt"),
    ("deliveries", "redeliver_delivery"),
]


def create_support_group(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after all migrations; this group needs them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Support")
    for app_label, codename in SUPPORT_PERMISSIONS:
        group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def remove_support_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name="Support").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("tenants", "0002_admin_permissions"),
        ("webhooks", "0003_admin_permissions"),
        ("deliveries", "0003_admin_indexes_and_redeliver_permission"),
    ]

    operations = [migrations.RunPython(create_support_group, remove_support_group)]
