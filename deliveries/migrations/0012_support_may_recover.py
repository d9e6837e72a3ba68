"""The Support group may recover a subscription's time range, as it may redeliver one delivery."""

from django.db import migrations


def grant(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    # Permissions are normally created after all migrations; the group needs this one now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Support")
    group.permissions.add(
        Permission.objects.get(content_type__app_label="deliveries", codename="recover_subscription"),
        Permission.objects.get(content_type__app_label="deliveries", codename="view_recovery"),
    )


def revoke(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    group = apps.get_model("auth", "Group").objects.filter(name="Support").first()
    if group is not None:
        group.permissions.remove(
            *Permission.objects.filter(
                content_type__app_label="deliveries", codename__in=["recover_subscription", "view_recovery"]
            )
        )


class Migration(migrations.Migration):
    dependencies = [
        ("deliveries", "0011_recovery"),
        ("deliveries", "0004_support_group"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
