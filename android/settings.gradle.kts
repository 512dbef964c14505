// The msocket Android library as a standalone Gradle build (`./gradlew publishToMavenLocal`
// from this directory). Gradle reads gradle/libs.versions.toml as the `libs` catalog; every
// plugin and library version comes from there.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "msocket-android"
