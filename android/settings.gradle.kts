// The msocket Android library as a standalone Gradle build (`./gradlew publishToMavenLocal`
// from this directory). Apps depend on the published artifact; see README.md.
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
