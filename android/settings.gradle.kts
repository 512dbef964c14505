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
    // Repositories are declared here only, so a build file cannot add one unnoticed.
    repositoriesMode = RepositoriesMode.FAIL_ON_PROJECT_REPOS
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "msocket-android"
